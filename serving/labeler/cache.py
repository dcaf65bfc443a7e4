"""Scores already computed, keyed by (normalized query, pin, teacher input hash, version).

Search queries repeat heavily, so most rows of a stream were already scored by the same
teacher. The cache is a SQLite file in the state folder (it survives restarts) behind a
bounded in-memory LRU (hot keys cost no I/O). Entries are immutable: one key is always the
same teacher on the same text, so there is nothing to invalidate.

The query is normalized by exactly what every reader of it inside the teacher ignores, so
two queries with one key get the same label: MiniLM's tokenizer (uncased BERT: it lower-
cases character by character, maps its whitespace characters to a space and splits on
them) and the lexical features (lower case, `[a-z0-9]+` words) both ignore case and runs of
that whitespace. Accents are NOT folded: the tokenizer strips them but the lexical features
do not ("café" has the term "caf"), so folding them would change labels. Neither are the
control characters the tokenizer deletes ("oak\x1fdesk" is one word to it, two to the
lexical features). tests/test_labeler_cache.py checks both readers on varied text.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel


class CachedScore(BaseModel):
    probs: list[float]
    score: float
    label_scale: int


# The characters MiniLM's tokenizer turns into a space (`\t`, `\n`, `\r` and Unicode
# White_Space that is not a control character); Python's `str.split()` also splits on
# `\x0b`, `\x0c`, `\x1c`-`\x1f` and `\x85`, which the tokenizer deletes instead.
_SPACE_RUN = re.compile("[\t\n\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+")


def normalize_query(query: str) -> str:
    """The query as the teacher reads it: lower case, its whitespace runs as one space.

    Args:
        query: the raw search query.

    Returns:
        The normalized query; the teacher labels it exactly as it labels `query`.
    """
    # Character by character, as the tokenizer does: `str.lower()` alone would turn a
    # word-final capital sigma into "ς", a different token than the tokenizer's "σ".
    lowered = query.lower() if "\u03a3" not in query else "".join(c.lower() for c in query)
    return _SPACE_RUN.sub(" ", lowered).strip(" ")


def input_hash(query: str, pin_text: str) -> str:
    """Hash of exactly what the teacher reads; stored with every label for audits."""
    digest = hashlib.sha256()
    digest.update(normalize_query(query).encode())
    digest.update(b"\x1f")
    digest.update(pin_text.encode())
    return digest.hexdigest()[:32]


def cache_key(query: str, pin_id: str, text_hash: str, teacher_version: str) -> str:
    return f"{teacher_version}\x1f{pin_id}\x1f{text_hash}\x1f{normalize_query(query)}"


# Under the state directory: the live labeler and backfills share one cache.
CACHE_FILE = Path("labeler") / "score-cache.sqlite"


class ScoreCache:
    @classmethod
    def in_state_dir(cls, state_dir: Path, memory_items: int = 200_000) -> ScoreCache:
        """The platform's score cache (`<state_dir>/labeler/score-cache.sqlite`).

        Args:
            state_dir: `settings.state_dir`.
            memory_items: scores also kept in memory (LRU).

        Returns:
            The cache, its file created if missing.
        """
        return cls(Path(state_dir) / CACHE_FILE, memory_items)

    def __init__(self, path: Path, memory_items: int = 200_000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
        )
        self.memory: OrderedDict[str, CachedScore] = OrderedDict()
        self.memory_items = memory_items
        self.hits = 0
        self.misses = 0

    def _remember(self, key: str, value: CachedScore) -> None:
        self.memory[key] = value
        self.memory.move_to_end(key)
        while len(self.memory) > self.memory_items:
            self.memory.popitem(last=False)

    def get_many(self, keys: Sequence[str]) -> dict[str, CachedScore]:
        found: dict[str, CachedScore] = {}
        cold = []
        for key in dict.fromkeys(keys):
            if key in self.memory:
                self.memory.move_to_end(key)
                found[key] = self.memory[key]
            else:
                cold.append(key)
        for start in range(0, len(cold), 500):
            chunk = cold[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT key, value FROM scores WHERE key IN ({marks})", chunk)
            for key, value in rows:
                found[key] = CachedScore.model_validate_json(value)
                self._remember(key, found[key])
        hits = sum(1 for k in keys if k in found)
        self.hits += hits
        self.misses += len(keys) - hits
        return found

    def put_many(self, items: Iterable[tuple[str, CachedScore]]) -> None:
        rows = []
        for key, value in items:
            self._remember(key, value)
            rows.append((key, json.dumps(value.model_dump())))
        # One transaction per batch: autocommit would fsync every row.
        self.db.execute("BEGIN")
        try:
            self.db.executemany("INSERT OR IGNORE INTO scores (key, value) VALUES (?, ?)", rows)
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def close(self) -> None:
        self.db.close()
