"""Read real English query text (WANDS `query.csv`: query_id, query, query_class; tab-separated)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# WANDS leaves a few queries without a class; they are general home-goods queries.
UNCLASSIFIED = "Home Decor"


@dataclass(frozen=True)
class LoggedQuery:
    text: str
    query_class: str


class QueryLogError(ValueError):
    """The query file is not the tab-separated query_id/query/query_class file expected."""


def read_query_log(path: Path) -> list[LoggedQuery]:
    """Queries in file order, duplicates dropped (first one kept)."""
    rows: list[LoggedQuery] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["query_id", "query"]:
            raise QueryLogError(
                f"{path}: first line is {header!r}, expected tab-separated "
                "'query_id<TAB>query<TAB>query_class'; fix the file or unset "
                "generator.queries_file to use the built-in vocabulary"
            )
        for line_no, row in enumerate(reader, start=2):
            if len(row) < 2:
                raise QueryLogError(
                    f"{path}:{line_no}: {row!r} has {len(row)} column(s), expected query_id, "
                    "query and query_class separated by tabs"
                )
            text = " ".join(row[1].split()).lower()
            if not text or text in seen:
                continue
            seen.add(text)
            query_class = row[2].strip() if len(row) > 2 and row[2].strip() else UNCLASSIFIED
            rows.append(LoggedQuery(text, query_class))
    if not rows:
        raise QueryLogError(f"{path}: no queries in the file")
    return rows
