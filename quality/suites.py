"""The checks, by name: how each `quality.tables.<table>.<check>` rule becomes Great
Expectations expectations (or, for volume and lag, a numpy statistic).

Four kinds:
- row checks judge each row; their failing rows come back by index (quarantine);
- coverage checks (`<column>_coverage`) judge the share of rows carrying a feature;
- distribution checks compare a category histogram with the reference window (KL);
- statistics (volume, freshness lag) are computed with numpy: Great Expectations has no
  expectation for "rows per event-time minute against the recent median".
Coverage, distribution and statistics checks look at the rows that passed the critical
row checks: a broken row should not also skew the batch's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from infra.config import CheckRule
from quality.frames import Probabilities, epoch_seconds, has_value, languages, nan_to_inf
from quality.frames import score_error as _score_error


class CheckConfigError(ValueError):
    """A `quality.tables` rule that cannot be applied to its table; says which and why."""


@dataclass(frozen=True)
class Planned:
    """One expectation and the check (and column) it reports for."""

    check: str
    column: str | None
    expectation: Any
    threshold: str
    threshold_min: float | None = None
    threshold_max: float | None = None


class FrameBuilder:
    """The pandas frame a batch is validated as: only the columns the rules read, plus
    derived per-row numbers, each converted or computed once."""

    def __init__(self, table: str, rows: pa.Table) -> None:
        self.table = table
        self.rows = rows
        self.frame = pd.DataFrame(index=pd.RangeIndex(rows.num_rows))

    def require(self, check: str, column: str) -> None:
        if column not in self.rows.column_names:
            raise CheckConfigError(
                f"quality.tables.{self.table}.{check}: column {column!r} is not in table "
                f"{self.table} (columns: {', '.join(self.rows.column_names)}); fix the rule's "
                "`columns` or disable the check"
            )

    def raw(self, check: str, column: str) -> str:
        self.require(check, column)
        if column not in self.frame:
            self.frame[column] = self.rows.column(column).to_pandas()
        return column

    def derived(self, name: str, compute: Callable[[], Any]) -> str:
        if name not in self.frame:
            values = compute()
            if isinstance(values, pa.Array | pa.ChunkedArray):
                values = values.to_pandas()
            self.frame[name] = values
        return name

    def length(self, check: str, column: str) -> str:
        """Characters per row of a text column (NaN where null): validating lengths on
        this number instead of the strings keeps text out of the frame, which GX hashes
        on every batch."""
        self.require(check, column)
        return self.derived(
            f"_len__{column}",
            lambda: pc.cast(pc.utf8_length(self.rows.column(column)), pa.float64()),
        )

    def category(self, check: str, column: str) -> str:
        """A low-cardinality text column as a pandas categorical (cheap to hash)."""
        self.require(check, column)
        return self.derived(f"_cat__{column}", lambda: self.rows.column(column).dictionary_encode())

    def is_text(self, column: str) -> bool:
        kind = self.rows.schema.field(column).type
        return pa.types.is_string(kind) or pa.types.is_large_string(kind)

    def age_seconds(self, check: str, time_column: str) -> str:
        """Seconds from `time_column` to the sink's ingest time (negative: in the future)."""
        self.require(check, time_column)
        return self.derived(
            f"_age_s__{time_column}",
            lambda: (
                epoch_seconds(self.rows.column("_ingested_at"))
                - epoch_seconds(self.rows.column(time_column))
            ),
        )

    def probabilities(self) -> Probabilities:
        if not hasattr(self, "_probs"):
            self.require("probs", "probs")
            self._probs = Probabilities(self.rows.column("probs"))
        return self._probs


def _columns(check: str, rule: CheckRule, default: list[str]) -> list[str]:
    columns = rule.columns or default
    if not columns:
        raise CheckConfigError(f"quality.tables.*.{check}: set `columns` for this check")
    return columns


def _bound(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _range_text(rule: CheckRule, unit: str = "") -> str:
    if rule.min is not None and rule.max is not None:
        return f"in [{_bound(rule.min)}, {_bound(rule.max)}]{unit}"
    if rule.min is not None:
        return f">= {_bound(rule.min)}{unit}"
    return f"<= {_bound(rule.max)}{unit}"


# Row checks -------------------------------------------------------------------------

RowBuilder = Callable[[str, CheckRule, FrameBuilder, Any], list[Planned]]


def _not_empty(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    plans = []
    shortest = int(rule.min if rule.min is not None else 1)
    default = ["teacher_version"] if check == "teacher_version_present" else []
    for column in _columns(check, rule, default):
        if not fb.is_text(column):
            c = fb.raw(check, column)
            plans.append(
                Planned(check, column, gx.ExpectColumnValuesToNotBeNull(column=c), "not null")
            )
            continue
        c = fb.length(check, column)
        plans.append(Planned(check, column, gx.ExpectColumnValuesToNotBeNull(column=c), "not null"))
        plans.append(
            Planned(
                check,
                column,
                gx.ExpectColumnValuesToBeBetween(column=c, min_value=shortest),
                f"length >= {shortest}",
                threshold_min=shortest,
            )
        )
    return plans


def _known_values(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    if not rule.values:
        raise CheckConfigError(f"quality.tables.{fb.table}.{check}: set `values` (allowed set)")
    plans = []
    for column in _columns(check, rule, [check.removesuffix("_known")]):
        c = fb.category(check, column) if fb.is_text(column) else fb.raw(check, column)
        plans.append(
            Planned(
                check,
                column,
                gx.ExpectColumnValuesToBeInSet(column=c, value_set=list(rule.values)),
                f"in {len(rule.values)} known values",
            )
        )
    return plans


def _lengths(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    low = None if rule.min is None else int(rule.min)
    high = None if rule.max is None else int(rule.max)
    if low is None and high is None:
        raise CheckConfigError(f"quality.tables.{fb.table}.{check}: set `min` and/or `max`")
    plans = []
    for column in _columns(check, rule, [check.removesuffix("_length")]):
        if column not in fb.rows.column_names:
            continue  # an optional text feature this table does not have
        c = fb.length(check, column)
        plans.append(
            Planned(
                check,
                column,
                gx.ExpectColumnValuesToBeBetween(column=c, min_value=low, max_value=high),
                "length " + _range_text(rule, " chars"),
                rule.min,
                rule.max,
            )
        )
    return plans


def _not_future(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    skew = float(rule.max or 0.0)
    return [
        Planned(
            check,
            column,
            gx.ExpectColumnValuesToBeBetween(column=fb.age_seconds(check, column), min_value=-skew),
            f"<= {skew:g} s after ingest",
            threshold_max=skew,
        )
        for column in _columns(check, rule, ["event_time"])
    ]


def _retention(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    if rule.max is None:
        raise CheckConfigError(f"quality.tables.{fb.table}.{check}: set `max` (seconds)")
    return [
        Planned(
            check,
            column,
            gx.ExpectColumnValuesToBeBetween(
                column=fb.age_seconds(check, column), max_value=rule.max
            ),
            f"age <= {rule.max / 86400:g} days",
            threshold_max=rule.max,
        )
        for column in _columns(check, rule, ["event_time"])
    ]


def _probs_in_range(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    low = 0.0 if rule.min is None else rule.min
    high = 1.0 if rule.max is None else rule.max
    probs = fb.probabilities()
    lowest = fb.derived("_prob_min", probs.minimum)
    highest = fb.derived("_prob_max", probs.maximum)
    text = f"each in [{low:g}, {high:g}]"
    return [
        Planned(check, "probs", gx.ExpectColumnValuesToBeBetween(column=lowest, min_value=low),
                text, low, high),
        Planned(check, "probs", gx.ExpectColumnValuesToBeBetween(column=highest, max_value=high),
                text, low, high),
    ]  # fmt: skip


def _error_at_most(
    check: str, column: str, error: str, limit: float, threshold: str, gx: Any
) -> Planned:
    """The plan of a check on a per-row error (derived column `error`): at most `limit`,
    reported for `column`."""
    expectation = gx.ExpectColumnValuesToBeBetween(column=error, max_value=limit)
    return Planned(check, column, expectation, threshold, threshold_max=limit)


def _probs_sum(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    tolerance = 1e-3 if rule.max is None else rule.max
    probs = fb.probabilities()
    error = fb.derived("_prob_sum_error", lambda: nan_to_inf(probs.total() - 1.0))
    return [_error_at_most(check, "probs", error, tolerance, f"|sum - 1| <= {tolerance:g}", gx)]


def _label_scale(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    probs = fb.probabilities()
    fb.require(check, "label_scale")

    def error() -> np.ndarray:
        scale = np.asarray(fb.rows.column("label_scale").to_numpy(), dtype="float64")
        return np.abs(scale - probs.lengths)

    error_column = fb.derived("_scale_error", error)
    plans = [_error_at_most(check, "label_scale", error_column, 0, "== len(probs)", gx)]
    if rule.values:
        allowed = [int(v) for v in rule.values]
        plans.append(
            Planned(
                check,
                "label_scale",
                gx.ExpectColumnValuesToBeInSet(
                    column=fb.raw(check, "label_scale"), value_set=allowed
                ),
                f"in {allowed}",
            )
        )
    return plans


def _score(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> list[Planned]:
    tolerance = 1e-3 if rule.max is None else rule.max
    formulas = rule.values or ["expected_grade", "normalized_expected_grade"]
    fb.require(check, "score")
    error = fb.derived("_score_error", lambda: _score_error(fb.rows, formulas))
    text = f"|score - {' or '.join(formulas)}(probs)| <= {tolerance:g}"
    return [_error_at_most(check, "score", error, tolerance, text, gx)]


ROW_CHECKS: dict[str, RowBuilder] = {
    "required_keys": _not_empty,
    "teacher_version_present": _not_empty,
    "country_known": _known_values,
    "locale_known": _known_values,
    "query_length": _lengths,
    "text_length": _lengths,
    "event_time_not_future": _not_future,
    "event_time_retention": _retention,
    "probs_in_range": _probs_in_range,
    "probs_sum_to_one": _probs_sum,
    "label_scale_matches": _label_scale,
    "score_consistent": _score,
}

# Batch checks -----------------------------------------------------------------------


def coverage_plan(check: str, rule: CheckRule, fb: FrameBuilder, gx: Any) -> Planned:
    """`<column>_coverage`: the share of rows whose column is set (non-empty)."""
    (column,) = _columns(check, rule, [check.removesuffix("_coverage")])[:1]
    fb.require(check, column)
    share = fb.derived(f"_has__{column}", lambda: has_value(fb.rows, column).astype("float64"))
    return Planned(
        check,
        column,
        gx.ExpectColumnMeanToBeBetween(column=share, min_value=rule.min, max_value=rule.max),
        "share " + _range_text(rule),
        rule.min,
        rule.max,
    )


def _language_categories(check: str, rule: CheckRule, fb: FrameBuilder) -> str:
    (column,) = _columns(check, rule, ["locale"])[:1]
    fb.require(check, column)
    return fb.derived(f"_language__{column}", lambda: languages(fb.rows.column(column)))


def _label_categories(check: str, rule: CheckRule, fb: FrameBuilder) -> str:
    probs = fb.probabilities()
    return fb.derived("_label", lambda: probs.argmax().astype(str))


CategoryBuilder = Callable[[str, CheckRule, FrameBuilder], str]
DISTRIBUTION_CHECKS: dict[str, CategoryBuilder] = {
    "query_language_mix": _language_categories,
    "label_distribution": _label_categories,
}
STATISTIC_CHECKS = ("volume", "freshness_lag")


def kind_of(check: str) -> str:
    if check in ROW_CHECKS:
        return "row"
    if check.endswith("_coverage"):
        return "coverage"
    if check in DISTRIBUTION_CHECKS:
        return "distribution"
    if check in STATISTIC_CHECKS:
        return "statistic"
    known = sorted([*ROW_CHECKS, *DISTRIBUTION_CHECKS, *STATISTIC_CHECKS, "<column>_coverage"])
    raise CheckConfigError(f"unknown data-quality check {check!r}; known: {', '.join(known)}")


def time_seconds(check: str, rule: CheckRule, fb: FrameBuilder) -> str:
    (column,) = _columns(check, rule, ["event_time"])[:1]
    fb.require(check, column)
    return fb.derived(f"_epoch__{column}", lambda: epoch_seconds(fb.rows.column(column)))


def rows_per_window(epoch_s: np.ndarray, window_s: float) -> float:
    """Median rows per event-time window among the windows the batch touches."""
    windows = np.floor(epoch_s[~np.isnan(epoch_s)] / window_s)
    if windows.size == 0:
        return 0.0
    _, counts = np.unique(windows, return_counts=True)
    return float(np.median(counts))


def p95(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(np.percentile(values, 95)) if values.size else None
