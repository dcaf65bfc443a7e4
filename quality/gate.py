"""The quality gate the Iceberg sink calls on every batch, right before its commit.

    gate = QualityGate(settings, catalog)
    outcome = gate.guard("labels", rows, batch_id)   # check + persist + publish
    table.append(outcome.passed, ...)                # the sink commits the rest

Rows failing a critical check go to `<table>_quarantine` with the checks they failed,
never dropped; their Kafka offsets still count as consumed (the sink records them in the
same commit as the passed rows). Warnings commit and alert. Every check's result goes to
`dq_results`. A table without rules in `quality.tables` passes through untouched.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from infra.catalog import open_catalog
from infra.config import CheckRule, Settings
from quality import gx_runtime
from quality.alerts import AlertManager, AlertPublisher
from quality.models import Alert, CheckResult, GateOutcome
from quality.reference import ReferenceWindow, kl_divergence, partition
from quality.store import QualityStore
from quality.suites import (
    DISTRIBUTION_CHECKS,
    ROW_CHECKS,
    FrameBuilder,
    Planned,
    coverage_plan,
    kind_of,
    p95,
    rows_per_window,
    time_seconds,
)
from schemas.quality import QUARANTINE_TABLES

log = logging.getLogger(__name__)

# Keys of the source row named in an alert's sample, when the table has them.
_ROW_KEYS = ("impression_id", "pin_id", "query", "teacher_version")


def kafka_ranges(rows: pa.Table) -> list[tuple[int, int, int]]:
    """(partition, first offset, last offset) of the rows, per partition."""
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


class _Batch:
    """Everything one check() call accumulates."""

    def __init__(self, table: str, rows: pa.Table, batch_id: str, now: datetime) -> None:
        self.table = table
        self.rows = rows
        self.batch_id = batch_id
        self.now = now
        self.ranges = kafka_ranges(rows)
        self.batch_key = table + "|" + ",".join(f"{p}:{first}" for p, first, _ in self.ranges)
        self.offset_ranges = ",".join(f"{p}:{a}-{b}" for p, a, b in self.ranges)
        self.results: list[CheckResult] = []
        # Per row, the checks it failed (critical ones decide the quarantine).
        self.failed_checks: list[list[str]] = [[] for _ in range(rows.num_rows)]
        self.quarantine = np.zeros(rows.num_rows, dtype=bool)
        self.samples: dict[str, list[dict[str, Any]]] = {}
        self.profile: dict[str, Any] = {}

    def result(
        self,
        check: str,
        rule: CheckRule,
        *,
        passed: bool,
        threshold: str,
        message: str,
        rows: int,
        column: str | None = None,
        observed: float | None = None,
        failed_rows: int = 0,
        skipped: bool = False,
        threshold_min: float | None = None,
        threshold_max: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        if observed is not None and not np.isfinite(observed):
            observed = None
        self.results.append(
            CheckResult(
                table_name=self.table,
                check=check,
                column=column,
                severity=rule.severity,
                passed=passed,
                skipped=skipped,
                observed_value=observed,
                threshold_min=threshold_min,
                threshold_max=threshold_max,
                threshold=threshold,
                rows=rows,
                failed_rows=failed_rows,
                batch_id=self.batch_id,
                batch_key=self.batch_key,
                offset_ranges=self.offset_ranges,
                evaluated_at=self.now,
                message=message,
                details=json.dumps(details, default=str) if details else None,
            )
        )


class QualityGate:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog | None = None,
        publisher: AlertPublisher | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.quality
        self.catalog = catalog or open_catalog(settings)
        self.store = QualityStore(settings, self.catalog)
        self.alerts = AlertManager(self.cfg.alert_repeat_s, *([clock] if clock else []))
        self._publisher = publisher
        self._references: dict[str, ReferenceWindow] = {}

    @property
    def publisher(self) -> AlertPublisher:
        if self._publisher is None:
            self._publisher = AlertPublisher(self.settings)
        return self._publisher

    def applies_to(self, table_name: str) -> bool:
        return self.cfg.enabled and bool(self.cfg.rules_for(table_name))

    # The sink's one call ---------------------------------------------------------------

    def guard(self, table_name: str, rows: pa.Table, batch_id: str) -> GateOutcome:
        outcome = self.check(table_name, rows, batch_id)
        if outcome.results:
            # Alerts first: a restarted gate takes a check failing in dq_results as already
            # alerted, so a crash between the two may repeat an alert but never lose one.
            self.publish(outcome)
            self.persist(outcome)
        return outcome

    def persist(self, outcome: GateOutcome) -> None:
        """Quarantined rows and every check's result into Iceberg (idempotent)."""
        self.store.write(outcome)

    def publish(self, outcome: GateOutcome) -> None:
        self.publisher.publish(outcome.alerts)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()

    # Checking --------------------------------------------------------------------------

    def check(self, table_name: str, rows: pa.Table, batch_id: str) -> GateOutcome:
        rules = self.cfg.rules_for(table_name) if self.cfg.enabled else {}
        batch = _Batch(table_name, rows, batch_id, datetime.now(UTC))
        if not rules or rows.num_rows == 0:
            return self._outcome(batch)
        fb = FrameBuilder(table_name, rows)
        gx = gx_runtime.expectations()
        by_kind: dict[str, dict[str, CheckRule]] = defaultdict(dict)
        for check, rule in rules.items():
            by_kind[kind_of(check)][check] = rule

        self._row_checks(batch, fb, gx, by_kind["row"])
        self._batch_checks(batch, fb, gx, by_kind)
        outcome = self._outcome(batch)
        reference = self._reference(table_name)
        reference.add(batch.batch_key, batch.now, batch.profile)
        outcome.alerts = self._alerts(batch, outcome)
        return outcome

    def _row_checks(
        self, batch: _Batch, fb: FrameBuilder, gx: Any, rules: dict[str, CheckRule]
    ) -> None:
        plans: list[Planned] = []
        for check, rule in rules.items():
            plans += ROW_CHECKS[check](check, rule, fb, gx)
        for i, plan in enumerate(plans):
            plan.expectation.meta = {"plan": i}
        total = batch.rows.num_rows
        for result in gx_runtime.validate(fb.frame, [p.expectation for p in plans], True):
            plan = plans[_plan_index(result)]
            rule = rules[plan.check]
            failing = [int(i) for i in result.result.get("unexpected_index_list") or []]
            count = int(result.result.get("unexpected_count") or len(failing))
            for i in failing:
                if plan.check not in batch.failed_checks[i]:
                    batch.failed_checks[i].append(plan.check)
                if rule.severity == "critical":
                    batch.quarantine[i] = True
            sample = self._sample(batch.rows, failing, plan.column)
            if failing:
                batch.samples.setdefault(plan.check, []).extend(sample)
            batch.result(
                plan.check,
                rule,
                column=plan.column,
                passed=bool(result.success),
                observed=count / total,
                failed_rows=count,
                rows=total,
                threshold=plan.threshold,
                threshold_min=plan.threshold_min,
                threshold_max=plan.threshold_max,
                message=(
                    f"{count} of {total} rows fail {plan.column or ''} {plan.threshold}".strip()
                    if count
                    else "ok"
                ),
                details={"sample_rows": sample} if sample else None,
            )

    def _batch_checks(
        self,
        batch: _Batch,
        fb: FrameBuilder,
        gx: Any,
        by_kind: dict[str, dict[str, CheckRule]],
    ) -> None:
        """Coverage, distributions and statistics, on the rows that passed so far."""
        # Derive every column first: the frame is filtered once, afterwards.
        coverage = {c: coverage_plan(c, r, fb, gx) for c, r in by_kind["coverage"].items()}
        categories = {
            c: DISTRIBUTION_CHECKS[c](c, r, fb) for c, r in by_kind["distribution"].items()
        }
        times = {c: time_seconds(c, r, fb) for c, r in by_kind["statistic"].items()}
        ages = {
            c: fb.age_seconds(c, (r.columns or ["event_time"])[0])
            for c, r in by_kind["statistic"].items()
            if c == "freshness_lag"
        }
        keep = ~batch.quarantine
        frame = fb.frame if keep.all() else fb.frame[keep].reset_index(drop=True)
        rows = len(frame)
        reference = self._reference(batch.table)
        plans: list[Planned] = []
        extra: dict[str, dict[str, Any]] = {}

        for check, plan in coverage.items():
            rule = by_kind["coverage"][check]
            if rows < rule.min_rows:
                self._skip(batch, check, rule, rows, plan.threshold, f"fewer than {rule.min_rows}")
            else:
                plans.append(plan)

        for check, column in categories.items():
            rule = by_kind["distribution"][check]
            counts = {str(k): int(v) for k, v in frame[column].value_counts().items()}
            batch.profile[check] = counts
            threshold = f"KL <= {rule.max:g}" if rule.max is not None else "KL"
            have = reference.batches(batch.now, check)
            if rows < rule.min_rows or have < self.cfg.reference_min_batches or not counts:
                why = (
                    f"reference window has {have} of {self.cfg.reference_min_batches} batches"
                    if rows >= rule.min_rows
                    else f"fewer than {rule.min_rows} rows"
                )
                self._skip(batch, check, rule, rows, threshold, why, {"profile": counts})
                continue
            expected = partition(reference.histogram(batch.now, check), counts)
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
            self._judged(batch, plan, rule, rows, bool(result.success), observed, details)

        for check, epoch in times.items():
            rule = by_kind["statistic"][check]
            if check == "volume":
                self._volume(batch, rule, frame[epoch].to_numpy(), rows, reference)
            else:
                self._freshness(batch, rule, frame[ages[check]].to_numpy(), rows)

    def _judged(
        self,
        batch: _Batch,
        plan: Planned,
        rule: CheckRule,
        rows: int,
        passed: bool,
        observed: float | None,
        details: dict[str, Any] | None,
    ) -> None:
        shown = "n/a" if observed is None else f"{observed:.4g}"
        if not passed:
            self._fail_batch(batch, plan.check, rule)
        batch.result(
            plan.check,
            rule,
            column=plan.column if not plan.column or not plan.column.startswith("_") else None,
            passed=passed,
            observed=observed,
            rows=rows,
            threshold=plan.threshold,
            threshold_min=plan.threshold_min,
            threshold_max=plan.threshold_max,
            message=f"observed {shown}, expected {plan.threshold}",
            details=details,
        )

    def _volume(
        self,
        batch: _Batch,
        rule: CheckRule,
        epoch_s: np.ndarray,
        rows: int,
        reference: ReferenceWindow,
    ) -> None:
        window = self.cfg.volume_window_s
        per_window = rows_per_window(epoch_s, window)
        batch.profile["volume"] = per_window
        median = reference.median(batch.now, "volume")
        have = reference.batches(batch.now, "volume")
        threshold = "ratio to reference " + (
            f"in [{rule.min:g}, {rule.max:g}]"
            if rule.min is not None and rule.max is not None
            else (f">= {rule.min:g}" if rule.min is not None else f"<= {rule.max:g}")
        )
        details = {"profile": per_window, "reference_median": median, "window_s": window}
        if median is None or median <= 0 or have < self.cfg.reference_min_batches:
            why = f"reference window has {have} of {self.cfg.reference_min_batches} batches"
            self._skip(batch, "volume", rule, rows, threshold, why, details)
            return
        ratio = per_window / median
        passed = (rule.min is None or ratio >= rule.min) and (rule.max is None or ratio <= rule.max)
        plan = Planned("volume", None, None, threshold, rule.min, rule.max)
        batch_msg = f"{per_window:g} rows per {window:g} s window vs reference median {median:g}"
        self._judged(batch, plan, rule, rows, passed, ratio, {**details, "summary": batch_msg})

    def _freshness(self, batch: _Batch, rule: CheckRule, ages: np.ndarray, rows: int) -> None:
        threshold = f"p95 lag <= {rule.max:g} s" if rule.max is not None else "p95 lag"
        lag = p95(ages)
        if rows < rule.min_rows or lag is None:
            self._skip(batch, "freshness_lag", rule, rows, threshold, "no rows with a time")
            return
        passed = rule.max is None or lag <= rule.max
        plan = Planned("freshness_lag", None, None, threshold, None, rule.max)
        self._judged(batch, plan, rule, rows, passed, lag, {"p95_s": lag, "max_s": rule.max})

    def _fail_batch(self, batch: _Batch, check: str, rule: CheckRule) -> None:
        """A batch-level check failed: critical sends every remaining row to quarantine."""
        if rule.severity != "critical":
            return
        for i in np.flatnonzero(~batch.quarantine):
            batch.failed_checks[i].append(check)
        batch.quarantine[:] = True

    def _skip(
        self,
        batch: _Batch,
        check: str,
        rule: CheckRule,
        rows: int,
        threshold: str,
        why: str,
        details: dict[str, Any] | None = None,
    ) -> None:
        batch.result(
            check,
            rule,
            passed=True,
            skipped=True,
            rows=rows,
            threshold=threshold,
            message=f"skipped: {why}",
            details=details,
        )

    def _sample(
        self, rows: pa.Table, failing: list[int], column: str | None
    ) -> list[dict[str, Any]]:
        picked = failing[: self.cfg.alert_sample_rows]
        if not picked:
            return []
        taken = rows.take(pa.array(picked, pa.int64()))
        keys = [k for k in _ROW_KEYS if k in rows.column_names][:2]
        sample = []
        for row in taken.to_pylist():
            item: dict[str, Any] = {
                "partition": row["_kafka_partition"],
                "offset": row["_kafka_offset"],
            }
            item.update({k: row[k] for k in keys})
            if column and column in row and column not in keys:
                value = row[column]
                item[column] = value if not isinstance(value, str) else value[:80]
            sample.append(item)
        return sample

    def _outcome(self, batch: _Batch) -> GateOutcome:
        rows = batch.rows
        mask = pa.array(batch.quarantine)
        quarantined = rows.filter(mask)
        failed = [batch.failed_checks[i] for i in np.flatnonzero(batch.quarantine)]
        quarantined = quarantined.append_column(
            "failed_checks", pa.array(failed, pa.list_(pa.large_string()))
        )
        passed = rows if not batch.quarantine.any() else rows.filter(pc.invert(mask))
        return GateOutcome(
            table_name=batch.table,
            batch_id=batch.batch_id,
            batch_key=batch.batch_key,
            offset_ranges=batch.offset_ranges,
            passed=passed,
            quarantined=quarantined,
            results=batch.results,
            profile=batch.profile,
            ranges=batch.ranges,
            quarantined_indices=np.flatnonzero(batch.quarantine).tolist(),
        )

    # Reference window and alert state ----------------------------------------------------

    def _reference(self, table_name: str) -> ReferenceWindow:
        if table_name not in self._references:
            window = ReferenceWindow(
                self.cfg.reference_batches, timedelta(hours=self.cfg.reference_hours)
            )
            self._references[table_name] = window
            self._restore(table_name, window)
        return self._references[table_name]

    def _restore(self, table_name: str, window: ReferenceWindow) -> None:
        """Rebuild the reference window and the firing checks from `dq_results`."""
        since = datetime.now(UTC) - timedelta(hours=self.cfg.reference_hours)
        fields = ("check", "passed", "skipped", "evaluated_at", "batch_key", "details")
        recent = self.store.recent_results(since, table_name, fields).to_pylist()
        recent.sort(key=lambda r: r["evaluated_at"])
        profiles: dict[str, tuple[datetime, dict[str, Any]]] = {}
        verdicts: dict[str, tuple[bool, datetime]] = {}
        for row in recent:
            at = row["evaluated_at"]
            if row["details"]:
                details = json.loads(row["details"])
                if "profile" in details:
                    _, profile = profiles.setdefault(row["batch_key"], (at, {}))
                    profile[row["check"]] = details["profile"]
            if not row["skipped"]:
                failed_before, since_at = verdicts.get(row["check"], (True, at))
                failing = not row["passed"]
                # A failure streak starts at its first failing batch.
                verdicts[row["check"]] = (failing, since_at if failed_before and failing else at)
        for key, (at, profile) in sorted(profiles.items(), key=lambda kv: kv[1][0]):
            window.add(key, at, profile)
        for check, (failing, since_at) in verdicts.items():
            if failing:
                self.alerts.restore(table_name, check, since_at)

    def _alerts(self, batch: _Batch, outcome: GateOutcome) -> list[Alert]:
        grouped: dict[str, list[CheckResult]] = defaultdict(list)
        for result in batch.results:
            grouped[result.check].append(result)
        quarantined = outcome.quarantined.num_rows
        alerts = []
        for check, results in grouped.items():
            judged = [r for r in results if not r.skipped]
            if not judged:
                continue
            failed = [r for r in judged if not r.passed]
            decision = self.alerts.observe(batch.table, check, bool(failed))
            if decision is None:
                continue
            status, repeats, since = decision
            shown = failed or judged
            severity = shown[0].severity
            columns = sorted({r.column for r in shown if r.column})
            failed_rows = max((r.failed_rows for r in failed), default=0)
            observed = shown[0].observed_value
            where = f"{batch.table}.{check}"
            if status == "resolved":
                summary = (
                    f"[resolved] {where} passes again ({shown[0].message}); it failed "
                    f"{repeats + 1} time(s) since {since:%Y-%m-%d %H:%M:%S} UTC"
                )
            else:
                summary = self._firing_summary(
                    where, severity, failed, batch, quarantined, repeats, since
                )
            alerts.append(
                Alert(
                    status=status,
                    table=batch.table,
                    check=check,
                    severity=severity,  # type: ignore[arg-type]
                    summary=summary,
                    columns=columns,
                    observed_value=observed,
                    threshold=shown[0].threshold,
                    rows=batch.rows.num_rows,
                    failed_rows=failed_rows,
                    quarantined_rows=quarantined if severity == "critical" and failed else 0,
                    quarantine_table=QUARANTINE_TABLES.get(batch.table),
                    batch_id=batch.batch_id,
                    offset_ranges=batch.offset_ranges,
                    sample_rows=batch.samples.get(check, [])[: self.cfg.alert_sample_rows],
                    repeats=repeats,
                    failing_since=since,
                    at=batch.now,
                )
            )
        return alerts

    @staticmethod
    def _firing_summary(
        where: str,
        severity: str,
        failed: list[CheckResult],
        batch: _Batch,
        quarantined: int,
        repeats: int,
        since: datetime,
    ) -> str:
        total = batch.rows.num_rows
        what = "; ".join((f"{r.column}: " if r.column else "") + r.message for r in failed[:3]) + (
            f"; and {len(failed) - 3} more column(s)" if len(failed) > 3 else ""
        )
        failed_rows = max((r.failed_rows for r in failed), default=0)
        if severity == "critical" and failed_rows:
            fate = f"{failed_rows} row(s) quarantined in {QUARANTINE_TABLES.get(batch.table)}"
        elif severity == "critical":
            fate = f"the batch's {quarantined} row(s) quarantined"
        else:
            fate = "rows committed"
        again = (
            f" (failed {repeats} time(s) since the last alert; failing since "
            f"{since:%Y-%m-%d %H:%M:%S} UTC)"
            if repeats > 1
            else ""
        )
        return (
            f"[{severity}] {where} failed on batch of {total} rows: {what}; {fate}; "
            f"batch {batch.batch_id}, offsets {batch.offset_ranges}{again}"
        )


def _plan_index(result: Any) -> int:
    """Which planned expectation a GX result answers (its meta carries the index)."""
    config = result.expectation_config
    if config is None or not config.meta or "plan" not in config.meta:
        raise RuntimeError("a Great Expectations result lost its expectation's meta")
    return int(config.meta["plan"])


def rules_of(by_kind: dict[str, dict[str, CheckRule]], check: str) -> CheckRule:
    for rules in by_kind.values():
        if check in rules:
            return rules[check]
    raise KeyError(check)
