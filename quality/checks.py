"""One batch through a table's checks: which rows fail, which go to quarantine, and why.

    run = BatchRun(table, rows, batch_id, now)
    row_checks(run, fb, gx, rules_by_kind["row"], sample_rows=5)
    batch_checks(run, fb, gx, rules_by_kind, reference, quality_settings)
    outcome = run.outcome()

The guarantee: every row of the batch ends in exactly one of `outcome.passed` and
`outcome.quarantined`, in its original order, and a quarantined row carries the name of
every check it failed. A row goes to quarantine when it fails a critical row check, or
when a critical batch check fails (then every remaining row goes). Every enabled check
leaves at least one `CheckResult`, judged or skipped with the reason; none is silently
dropped. Batch checks (coverage, distributions, volume, freshness) judge only the rows
the critical row checks let through, so one broken row does not also skew the statistics.

The expectations themselves are planned in `quality/suites.py`; this module runs them
(one Great Expectations validation per kind) and turns their answers into results.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from infra.config import CheckRule, QualitySettings
from quality import gx_runtime
from quality.models import CheckResult, GateOutcome
from quality.reference import ReferenceWindow, kl_divergence, partition
from quality.sampling import sample_rows
from quality.suites import (
    DISTRIBUTION_CHECKS,
    ROW_CHECKS,
    FrameBuilder,
    Planned,
    coverage_plan,
    p95,
    rows_per_window,
    time_seconds,
)


def kafka_ranges(rows: pa.Table) -> list[tuple[int, int, int]]:
    """(partition, first offset, last offset) of the rows, per partition.

    Args:
        rows: a batch with `_kafka_partition` and `_kafka_offset` columns.

    Returns:
        One tuple per partition, sorted by partition; empty for an empty batch.
    """
    if rows.num_rows == 0:
        return []
    grouped = rows.group_by("_kafka_partition").aggregate(
        [("_kafka_offset", "min"), ("_kafka_offset", "max")]
    )
    return sorted(
        zip(
            grouped.column("_kafka_partition").to_pylist(),
            grouped.column("_kafka_offset_min").to_pylist(),
            grouped.column("_kafka_offset_max").to_pylist(),
            strict=True,
        )
    )


class BatchRun:
    """Everything the checks of one batch accumulate: results, per-row failures, the
    quarantine mask, alert samples and the profile the reference window keeps."""

    def __init__(self, table: str, rows: pa.Table, batch_id: str, now: datetime) -> None:
        self.table = table
        self.rows = rows
        self.batch_id = batch_id
        self.now = now
        self.ranges = kafka_ranges(rows)
        self.batch_key = table + "|" + ",".join(f"{p}:{first}" for p, first, _ in self.ranges)
        self.offset_ranges = ",".join(f"{p}:{a}-{b}" for p, a, b in self.ranges)
        # What names the batch in its results and its outcome.
        self.names: dict[str, Any] = {
            "table_name": table,
            "batch_id": batch_id,
            "batch_key": self.batch_key,
            "offset_ranges": self.offset_ranges,
        }
        self.results: list[CheckResult] = []
        # Per row, the checks it failed (critical ones decide the quarantine).
        self.failed_checks: list[list[str]] = [[] for _ in range(rows.num_rows)]
        self.quarantine = np.zeros(rows.num_rows, dtype=bool)
        self.samples: dict[str, list[dict[str, Any]]] = {}
        self.profile: dict[str, Any] = {}

    def result(
        self,
        plan: Planned,
        rule: CheckRule,
        *,
        passed: bool,
        message: str,
        rows: int,
        column: str | None = None,
        observed: float | None = None,
        failed_rows: int = 0,
        skipped: bool = False,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record one check's result (a non-finite observation is stored as None)."""
        if observed is not None and not np.isfinite(observed):
            observed = None
        self.results.append(
            CheckResult(
                **self.names,
                check=plan.check,
                column=column,
                severity=rule.severity,
                passed=passed,
                skipped=skipped,
                observed_value=observed,
                threshold_min=plan.threshold_min,
                threshold_max=plan.threshold_max,
                threshold=plan.threshold,
                rows=rows,
                failed_rows=failed_rows,
                evaluated_at=self.now,
                message=message,
                details=json.dumps(details, default=str) if details else None,
            )
        )

    def judged(
        self,
        plan: Planned,
        rule: CheckRule,
        rows: int,
        passed: bool,
        observed: float | None,
        details: dict[str, Any] | None,
    ) -> None:
        """Record a batch check's verdict; a critical failure quarantines the batch."""
        shown = "n/a" if observed is None else f"{observed:.4g}"
        if not passed:
            self.fail_batch(plan.check, rule)
        column = plan.column if not plan.column or not plan.column.startswith("_") else None
        self.result(
            plan,
            rule,
            column=column,
            passed=passed,
            observed=observed,
            rows=rows,
            message=f"observed {shown}, expected {plan.threshold}",
            details=details,
        )

    def skip(
        self,
        check: str,
        rule: CheckRule,
        rows: int,
        threshold: str,
        why: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        """Record a check that could not judge this batch (too few rows, no reference)."""
        plan = Planned(check, None, None, threshold)
        self.result(
            plan,
            rule,
            passed=True,
            skipped=True,
            rows=rows,
            message=f"skipped: {why}",
            details=details,
        )

    def fail_batch(self, check: str, rule: CheckRule) -> None:
        """A batch-level check failed: critical sends every remaining row to quarantine."""
        if rule.severity != "critical":
            return
        for i in np.flatnonzero(~self.quarantine):
            self.failed_checks[i].append(check)
        self.quarantine[:] = True

    def outcome(self) -> GateOutcome:
        """The batch split into passed and quarantined rows, with every result so far."""
        rows = self.rows
        mask = pa.array(self.quarantine)
        quarantined = rows.filter(mask)
        failed = [self.failed_checks[i] for i in np.flatnonzero(self.quarantine)]
        quarantined = quarantined.append_column(
            "failed_checks", pa.array(failed, pa.list_(pa.large_string()))
        )
        passed = rows if not self.quarantine.any() else rows.filter(pc.invert(mask))
        return GateOutcome(
            **self.names,
            passed=passed,
            quarantined=quarantined,
            results=self.results,
            profile=self.profile,
            ranges=self.ranges,
            quarantined_indices=np.flatnonzero(self.quarantine).tolist(),
        )


def row_checks(
    run: BatchRun, fb: FrameBuilder, gx: Any, rules: dict[str, CheckRule], sample_rows_max: int
) -> None:
    """Run the row checks on every row; mark failing rows, quarantine critical ones.

    Args:
        run: the batch being checked (its results, masks and samples are updated).
        fb: the batch's frame builder (derived columns are added to its frame).
        gx: the Great Expectations expectations module.
        rules: the enabled row checks of the table.
        sample_rows_max: how many failing rows a check's alert sample names at most.
    """
    plans: list[Planned] = []
    for check, rule in rules.items():
        plans += ROW_CHECKS[check](check, rule, fb, gx)
    for i, plan in enumerate(plans):
        plan.expectation.meta = {"plan": i}
    total = run.rows.num_rows
    for result in gx_runtime.validate(fb.frame, [p.expectation for p in plans], True):
        plan = plans[_plan_index(result)]
        rule = rules[plan.check]
        failing = [int(i) for i in result.result.get("unexpected_index_list") or []]
        count = int(result.result.get("unexpected_count") or len(failing))
        for i in failing:
            if plan.check not in run.failed_checks[i]:
                run.failed_checks[i].append(plan.check)
            if rule.severity == "critical":
                run.quarantine[i] = True
        sample = sample_rows(run.rows, failing, plan.column, sample_rows_max)
        if failing:
            run.samples.setdefault(plan.check, []).extend(sample)
        run.result(
            plan,
            rule,
            column=plan.column,
            passed=bool(result.success),
            observed=count / total,
            failed_rows=count,
            rows=total,
            message=(
                f"{count} of {total} rows fail {plan.column or ''} {plan.threshold}".strip()
                if count
                else "ok"
            ),
            details={"sample_rows": sample} if sample else None,
        )


def batch_checks(
    run: BatchRun,
    fb: FrameBuilder,
    gx: Any,
    by_kind: dict[str, dict[str, CheckRule]],
    reference: ReferenceWindow,
    cfg: QualitySettings,
) -> None:
    """Coverage, distributions and statistics, on the rows that passed so far.

    Args:
        run: the batch being checked (after `row_checks`).
        fb: the batch's frame builder.
        gx: the Great Expectations expectations module.
        by_kind: the table's enabled checks grouped by `suites.kind_of`.
        reference: the table's reference window (read here; the caller adds the batch).
        cfg: the quality settings (reference and volume window sizes).
    """
    # Derive every column first: the frame is filtered once, afterwards.
    coverage = {c: coverage_plan(c, r, fb, gx) for c, r in by_kind["coverage"].items()}
    categories = {c: DISTRIBUTION_CHECKS[c](c, r, fb) for c, r in by_kind["distribution"].items()}
    times = {c: time_seconds(c, r, fb) for c, r in by_kind["statistic"].items()}
    ages = {
        c: fb.age_seconds(c, (r.columns or ["event_time"])[0])
        for c, r in by_kind["statistic"].items()
        if c == "freshness_lag"
    }
    keep = ~run.quarantine
    frame = fb.frame if keep.all() else fb.frame[keep].reset_index(drop=True)
    rows = len(frame)
    plans: list[Planned] = []
    extra: dict[str, dict[str, Any]] = {}

    for check, plan in coverage.items():
        rule = by_kind["coverage"][check]
        if rows < rule.min_rows:
            run.skip(check, rule, rows, plan.threshold, f"fewer than {rule.min_rows}")
        else:
            plans.append(plan)

    for check, column in categories.items():
        rule = by_kind["distribution"][check]
        counts = {str(k): int(v) for k, v in frame[column].value_counts().items()}
        run.profile[check] = counts
        threshold = f"KL <= {rule.max:g}" if rule.max is not None else "KL"
        have = reference.batches(run.now, check)
        if rows < rule.min_rows or have < cfg.reference_min_batches or not counts:
            why = (
                f"reference window has {have} of {cfg.reference_min_batches} batches"
                if rows >= rule.min_rows
                else f"fewer than {rule.min_rows} rows"
            )
            run.skip(check, rule, rows, threshold, why, {"profile": counts})
            continue
        expected = partition(reference.histogram(run.now, check), counts)
        plans.append(
            Planned(
                check,
                column,
                gx.ExpectColumnKLDivergenceToBeLessThan(
                    column=column, partition_object=expected, threshold=rule.max
                ),
                threshold,
                threshold_max=rule.max,
            )
        )
        extra[check] = {
            "profile": counts,
            "reference": dict(zip(expected["values"], expected["weights"], strict=True)),
            "kl": kl_divergence(counts, expected),
        }

    for i, plan in enumerate(plans):
        plan.expectation.meta = {"plan": i}
    for result in gx_runtime.validate(frame, [p.expectation for p in plans], False):
        plan = plans[_plan_index(result)]
        rule = rules_of(by_kind, plan.check)
        observed = result.result.get("observed_value")
        details = extra.get(plan.check)
        if observed is None and details:
            observed = details["kl"]  # GX reports an infinite divergence as None
        run.judged(plan, rule, rows, bool(result.success), observed, details)

    for check, epoch in times.items():
        rule = by_kind["statistic"][check]
        if check == "volume":
            _volume(run, rule, frame[epoch].to_numpy(), rows, reference, cfg)
        else:
            _freshness(run, rule, frame[ages[check]].to_numpy(), rows)


def _volume(
    run: BatchRun,
    rule: CheckRule,
    epoch_s: np.ndarray,
    rows: int,
    reference: ReferenceWindow,
    cfg: QualitySettings,
) -> None:
    window = cfg.volume_window_s
    per_window = rows_per_window(epoch_s, window)
    run.profile["volume"] = per_window
    median = reference.median(run.now, "volume")
    have = reference.batches(run.now, "volume")
    threshold = "ratio to reference " + (
        f"in [{rule.min:g}, {rule.max:g}]"
        if rule.min is not None and rule.max is not None
        else (f">= {rule.min:g}" if rule.min is not None else f"<= {rule.max:g}")
    )
    details = {"profile": per_window, "reference_median": median, "window_s": window}
    if median is None or median <= 0 or have < cfg.reference_min_batches:
        why = f"reference window has {have} of {cfg.reference_min_batches} batches"
        run.skip("volume", rule, rows, threshold, why, details)
        return
    ratio = per_window / median
    passed = (rule.min is None or ratio >= rule.min) and (rule.max is None or ratio <= rule.max)
    plan = Planned("volume", None, None, threshold, rule.min, rule.max)
    batch_msg = f"{per_window:g} rows per {window:g} s window vs reference median {median:g}"
    run.judged(plan, rule, rows, passed, ratio, {**details, "summary": batch_msg})


def _freshness(run: BatchRun, rule: CheckRule, ages: np.ndarray, rows: int) -> None:
    threshold = f"p95 lag <= {rule.max:g} s" if rule.max is not None else "p95 lag"
    lag = p95(ages)
    if rows < rule.min_rows or lag is None:
        run.skip("freshness_lag", rule, rows, threshold, "no rows with a time")
        return
    passed = rule.max is None or lag <= rule.max
    plan = Planned("freshness_lag", None, None, threshold, None, rule.max)
    run.judged(plan, rule, rows, passed, lag, {"p95_s": lag, "max_s": rule.max})


def _plan_index(result: Any) -> int:
    """Which planned expectation a GX result answers (its meta carries the index)."""
    config = result.expectation_config
    if config is None or not config.meta or "plan" not in config.meta:
        raise RuntimeError("a Great Expectations result lost its expectation's meta")
    return int(config.meta["plan"])


def rules_of(by_kind: dict[str, dict[str, CheckRule]], check: str) -> CheckRule:
    """The rule of `check`, whichever kind it was grouped under.

    Raises:
        KeyError: no kind holds `check`.
    """
    for rules in by_kind.values():
        if check in rules:
            return rules[check]
    raise KeyError(check)
