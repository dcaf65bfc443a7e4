"""From a batch's check results to the alerts it sends, and back from `dq_results`.

Per (table, check) of a batch: the check's judged results (skipped ones change nothing)
go to `AlertManager` (`quality/alerts.py`), which decides whether this batch fires,
repeats or resolves an alert; this module writes the message. The guarantee: an alert
names what broke (check, columns, observed value and threshold), where (batch id, Kafka
offset ranges, a sample of offending rows) and what happened to the rows (quarantined in
which table, or committed). A restarted gate rebuilds which checks are firing, and since
when, from `dq_results`, so it neither re-alerts a known failure nor forgets to resolve it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from quality.alerts import AlertManager
from quality.checks import BatchRun
from quality.models import Alert, CheckResult, GateOutcome
from schemas.quality import QUARANTINE_TABLES


def batch_alerts(
    run: BatchRun, outcome: GateOutcome, manager: AlertManager, sample_rows: int
) -> list[Alert]:
    """The alerts one checked batch sends (none when nothing changed or is due).

    Args:
        run: the checked batch (its results and samples).
        outcome: the batch's outcome (for the quarantined row count).
        manager: the per-(table, check) alert state; updated by this call.
        sample_rows: how many offending rows an alert names at most.

    Returns:
        One `firing` or `resolved` alert per check that is due one, in check order.
    """
    grouped: dict[str, list[CheckResult]] = defaultdict(list)
    for result in run.results:
        grouped[result.check].append(result)
    quarantined = outcome.quarantined.num_rows
    alerts = []
    for check, results in grouped.items():
        judged = [r for r in results if not r.skipped]
        if not judged:
            continue
        failed = [r for r in judged if not r.passed]
        decision = manager.observe(run.table, check, bool(failed))
        if decision is None:
            continue
        status, repeats, since = decision
        shown = failed or judged
        severity = shown[0].severity
        where = f"{run.table}.{check}"
        if status == "resolved":
            summary = (
                f"[resolved] {where} passes again ({shown[0].message}); it failed "
                f"{repeats + 1} time(s) since {since:%Y-%m-%d %H:%M:%S} UTC"
            )
        else:
            summary = firing_summary(where, severity, failed, run, quarantined, repeats, since)
        alerts.append(
            Alert(
                status=status,
                table=run.table,
                check=check,
                severity=severity,  # type: ignore[arg-type]
                summary=summary,
                columns=sorted({r.column for r in shown if r.column}),
                observed_value=shown[0].observed_value,
                threshold=shown[0].threshold,
                rows=run.rows.num_rows,
                failed_rows=max((r.failed_rows for r in failed), default=0),
                quarantined_rows=quarantined if severity == "critical" and failed else 0,
                quarantine_table=QUARANTINE_TABLES.get(run.table),
                batch_id=run.batch_id,
                offset_ranges=run.offset_ranges,
                sample_rows=run.samples.get(check, [])[:sample_rows],
                repeats=repeats,
                failing_since=since,
                at=run.now,
            )
        )
    return alerts


def firing_summary(
    where: str,
    severity: str,
    failed: list[CheckResult],
    run: BatchRun,
    quarantined: int,
    repeats: int,
    since: datetime,
) -> str:
    """The one-line text of a `firing` alert: what failed, the rows' fate, where.

    Args:
        where: `table.check`.
        severity: the check's severity.
        failed: the check's failing results (one per column); the first three are named.
        run: the checked batch.
        quarantined: rows of the batch quarantined (by any check).
        repeats: failures folded into this alert.
        since: when the failure streak began.

    Returns:
        The summary, e.g. `[critical] labels.probs_sum_to_one failed on batch of ...`.
    """
    total = run.rows.num_rows
    what = "; ".join((f"{r.column}: " if r.column else "") + r.message for r in failed[:3]) + (
        f"; and {len(failed) - 3} more column(s)" if len(failed) > 3 else ""
    )
    failed_rows = max((r.failed_rows for r in failed), default=0)
    if severity == "critical" and failed_rows:
        fate = f"{failed_rows} row(s) quarantined in {QUARANTINE_TABLES.get(run.table)}"
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
        f"batch {run.batch_id}, offsets {run.offset_ranges}{again}"
    )


def failing_since(recent: Iterable[Mapping[str, Any]]) -> dict[str, datetime]:
    """The checks whose latest judged result in `recent` failed, and when that streak began.

    Args:
        recent: `dq_results` rows of one table (`check`, `passed`, `skipped`,
            `evaluated_at`), oldest first.

    Returns:
        check -> the `evaluated_at` of the first failing batch of its current streak.
    """
    verdicts: dict[str, tuple[bool, datetime]] = {}
    for row in recent:
        if row["skipped"]:
            continue
        at = row["evaluated_at"]
        failed_before, since_at = verdicts.get(row["check"], (True, at))
        failing = not row["passed"]
        # A failure streak starts at its first failing batch.
        verdicts[row["check"]] = (failing, since_at if failed_before and failing else at)
    return {check: since_at for check, (failing, since_at) in verdicts.items() if failing}
