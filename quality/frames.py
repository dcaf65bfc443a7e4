"""Per-row numbers derived from an Arrow batch, for the suites (quality/suites.py).

Checks Great Expectations expresses poorly on raw columns (a list of probabilities that
must sum to 1, a score that must match them, an event time relative to the ingest time)
become one number per row here, computed with numpy, so the expectation on that number
still runs through Great Expectations and still names each failing row.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def has_value(rows: pa.Table, column: str) -> np.ndarray:
    """Per row: the column holds a non-empty string or a non-empty list."""
    values = rows.column(column)
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        lengths = pc.fill_null(pc.list_value_length(values), 0)
    else:
        lengths = pc.fill_null(pc.utf8_length(values), 0)
    return np.asarray(pc.greater(lengths, 0).to_numpy(zero_copy_only=False), dtype=bool)


def epoch_seconds(values: pa.ChunkedArray) -> np.ndarray:
    """Timestamps as float seconds since the epoch, NaN where null."""
    micros = pc.cast(pc.cast(values, pa.timestamp("us", tz="UTC")), pa.int64())
    return np.asarray(pc.fill_null(pc.cast(micros, pa.float64()), np.nan).to_numpy()) / 1e6


def languages(locales: pa.ChunkedArray) -> pa.Array:
    """'es-MX' -> 'es': the query's language as the impression's locale states it."""
    lowered = pc.utf8_lower(pc.fill_null(locales, ""))
    return pc.list_element(pc.split_pattern(lowered, "-", max_splits=1), 0)


class Probabilities:
    """Per-row statistics of a list<double> column, vectorised over the flat values."""

    def __init__(self, probs: pa.ChunkedArray) -> None:
        array = probs.combine_chunks()
        self.rows = len(array)
        self.values = np.asarray(pc.list_flatten(array).to_numpy(zero_copy_only=False), float)
        self.parent = np.asarray(pc.list_parent_indices(array).to_numpy(), dtype=np.int64)
        self.lengths = np.asarray(pc.fill_null(pc.list_value_length(array), 0).to_numpy())
        starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))
        self.position = np.arange(len(self.values)) - starts[self.parent]

    def per_row(self, ufunc: np.ufunc, fill: float) -> np.ndarray:
        out = np.full(self.rows, fill)
        ufunc.at(out, self.parent, self.values)
        return out

    def minimum(self) -> np.ndarray:
        """Smallest probability; NaN anywhere reads as -inf (fails any lower bound)."""
        out = self.per_row(np.minimum, np.inf)
        out[np.isnan(out)] = -np.inf
        out[self.lengths == 0] = 0.0
        return out

    def maximum(self) -> np.ndarray:
        out = self.per_row(np.maximum, -np.inf)
        out[np.isnan(out)] = np.inf
        out[self.lengths == 0] = 0.0
        return out

    def total(self) -> np.ndarray:
        return np.bincount(self.parent, weights=self.values, minlength=self.rows)

    def expected_grade(self) -> np.ndarray:
        """sum_k k * p_k with grades 0 .. len - 1."""
        return np.bincount(self.parent, weights=self.values * self.position, minlength=self.rows)

    def argmax(self) -> np.ndarray:
        """Index of the largest probability (-1 for an empty list or NaN)."""
        top = self.per_row(np.maximum, -np.inf)
        hit = self.values == top[self.parent]
        first = np.full(self.rows, np.iinfo(np.int64).max)
        np.minimum.at(first, self.parent[hit], self.position[hit])
        first[first == np.iinfo(np.int64).max] = -1
        return first


def nan_to_inf(values: np.ndarray) -> np.ndarray:
    values = np.abs(values)
    values[np.isnan(values)] = np.inf
    return values


def score_error(rows: pa.Table, formulas: Iterable[str]) -> np.ndarray:
    probs = Probabilities(rows.column("probs"))
    grade = probs.expected_grade()
    score = np.asarray(pc.fill_null(rows.column("score"), np.nan).to_numpy(), float)
    denominator = np.maximum(probs.lengths - 1, 1)
    candidates = {
        "expected_grade": grade,
        "normalized_expected_grade": grade / denominator,
    }
    unknown = set(formulas) - set(candidates)
    if unknown:
        raise ValueError(
            f"quality.tables.labels.score_consistent.values: unknown score formula(s) "
            f"{sorted(unknown)}; use {sorted(candidates)}"
        )
    errors = [nan_to_inf(score - candidates[f]) for f in formulas]
    return np.minimum.reduce(errors) if errors else np.zeros(len(score))
