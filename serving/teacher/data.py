"""Labeled pairs from parquet: column presets for each source, one normalized frame out."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel

from infra.artifacts import sha256_of
from serving.teacher.text import build_pin_text, clean_query

PIN_FIELDS = ("title", "description", "caption", "board_titles", "top_queries", "link_title")


class ColumnMap(BaseModel):
    """Which source column feeds each teacher input; None means the source lacks it."""

    query: str = "query"
    label: str = "label"
    title: str | None = "title"
    description: str | None = "description"
    caption: str | None = "caption"
    board_titles: str | None = "board_titles"
    top_queries: str | None = "top_queries"
    link_title: str | None = "link_title"
    # Optional per-row rater disagreement; rows raters agreed on weigh more in training.
    variance: str | None = None
    # Levels of the label scale; None takes the largest label present.
    scale: int | None = None


COLUMN_PRESETS: dict[str, ColumnMap] = {
    "crowdflower": ColumnMap(
        label="median_relevance",
        title="product_title",
        description="product_description",
        caption=None,
        board_titles=None,
        top_queries=None,
        link_title=None,
        variance="relevance_variance",
        scale=4,
    ),
    # The world generator's labeled sample (streams/generator/sample.py), grades 1..4.
    "world": ColumnMap(scale=4),
}
PresetName = Literal["crowdflower", "world"]


class LabeledPairs(BaseModel):
    """Normalized training/evaluation rows: query, pin text, label (1..scale), weight."""

    model_config = {"arbitrary_types_allowed": True}

    frame: pd.DataFrame
    scale: int
    source: str
    sha256: str

    @property
    def queries(self) -> list[str]:
        return self.frame["query"].tolist()

    @property
    def pin_texts(self) -> list[str]:
        return self.frame["pin_text"].tolist()

    @property
    def labels(self) -> np.ndarray:
        return self.frame["label"].to_numpy(dtype=np.int64)


def _value(row: dict, column: str | None):
    if column is None:
        return None
    value = row.get(column)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def load_pairs(path: Path, columns: ColumnMap | str, scale: int | None = None) -> LabeledPairs:
    """Read labeled parquet through a column map; labels must be integers 1..scale."""
    mapping = COLUMN_PRESETS[columns] if isinstance(columns, str) else columns
    raw = pd.read_parquet(path)
    needed = [c for c in (mapping.query, mapping.label) if c not in raw.columns]
    if needed:
        raise ValueError(
            f"{path}: missing column(s) {needed} (has {list(raw.columns)}); "
            "pick the matching --columns preset or pass a column map"
        )
    records = raw.to_dict("records")
    pin_texts = [
        build_pin_text(**{f: _value(r, getattr(mapping, f)) for f in PIN_FIELDS}) for r in records
    ]
    labels = raw[mapping.label].astype("int64").to_numpy()
    top = int(scale or mapping.scale or labels.max())
    if labels.min() < 1 or labels.max() > top:
        raise ValueError(
            f"{path}: labels of column {mapping.label!r} run {labels.min()}..{labels.max()}, "
            f"expected 1..{top}"
        )
    if mapping.variance and mapping.variance in raw.columns:
        variance = raw[mapping.variance].fillna(0.0).to_numpy(dtype=np.float64)
        weight = 1.0 / (1.0 + variance)
    else:
        weight = np.ones(len(raw))
    frame = pd.DataFrame(
        {
            "query": [clean_query(str(q)) for q in raw[mapping.query]],
            "pin_text": pin_texts,
            "label": labels,
            "weight": weight / weight.mean(),
        }
    )
    return LabeledPairs(frame=frame, scale=top, source=str(path), sha256=sha256_of(path))


def query_folds(queries: list[str], k: int, seed: int) -> np.ndarray:
    """Fold id per row; every row of a query lands in the same fold (query-disjoint)."""
    unique = sorted(set(queries))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    fold_of = {unique[i]: n % k for n, i in enumerate(order)}
    return np.asarray([fold_of[q] for q in queries])
