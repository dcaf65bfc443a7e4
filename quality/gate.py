"""The quality gate the Iceberg sink calls on every batch, right before its commit.

    gate = QualityGate(settings, catalog)
    outcome = gate.guard("labels", rows, batch_id)   # check + persist + publish
    table.append(outcome.passed, ...)                # the sink commits the rest

Rows failing a critical check go to `<table>_quarantine` with the checks they failed,
never dropped; their Kafka offsets still count as consumed (the sink records them in the
same commit as the passed rows). Warnings commit and alert. Every check's result goes to
`dq_results`. A table without rules in `quality.tables` passes through untouched.

This module only composes the parts: the checks (`quality/checks.py`, planned in
`quality/suites.py`), the reference window (`quality/reference.py`), the alert policy
(`quality/alert_policy.py`, state in `quality/alerts.py`), the rows an alert names
(`quality/sampling.py`) and the Iceberg writes (`quality/store.py`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pyarrow as pa
from pyiceberg.catalog import Catalog

from infra.catalog import open_catalog
from infra.config import CheckRule, Settings
from quality import gx_runtime
from quality.alert_policy import batch_alerts, failing_since
from quality.alerts import AlertManager, AlertPublisher
from quality.checks import BatchRun, batch_checks, kafka_ranges, row_checks
from quality.models import GateOutcome
from quality.reference import ReferenceWindow
from quality.store import QualityStore
from quality.suites import FrameBuilder, kind_of

__all__ = ["QualityGate", "kafka_ranges"]

log = logging.getLogger(__name__)


class QualityGate:
    """Checks, quarantines, records and alerts on the batches of the tables with rules.

    Args:
        settings: the platform settings (`settings.quality` holds the rules).
        catalog: the Iceberg catalog of `dq_results` and the quarantine tables (default:
            `open_catalog(settings)`).
        publisher: where alerts go (default: an `AlertPublisher`, opened on first use).
        clock: monotonic seconds for the alert repeat window (tests pass a fake one).
    """

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
        """The alert publisher (topic, log, webhook), opened on first use."""
        if self._publisher is None:
            self._publisher = AlertPublisher(self.settings)
        return self._publisher

    def applies_to(self, table_name: str) -> bool:
        """Whether the gate is on and `table_name` has enabled rules."""
        return self.cfg.enabled and bool(self.cfg.rules_for(table_name))

    # The sink's one call ---------------------------------------------------------------

    def guard(self, table_name: str, rows: pa.Table, batch_id: str) -> GateOutcome:
        """Check one batch, send its alerts, then write its quarantine and results.

        Args:
            table_name: the Iceberg table the rows are bound for.
            rows: the batch, with `_kafka_partition` and `_kafka_offset`.
            batch_id: the sink's id of the batch (named in results and alerts).

        Returns:
            The outcome: `passed` is what the sink commits.
        """
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
        """Send the outcome's alerts (delivery problems are logged, never raised)."""
        self.publisher.publish(outcome.alerts)

    def close(self) -> None:
        """Flush and close the alert publisher, if one was opened."""
        if self._publisher is not None:
            self._publisher.close()

    # Checking --------------------------------------------------------------------------

    def check(self, table_name: str, rows: pa.Table, batch_id: str) -> GateOutcome:
        """Run the table's checks on one batch; nothing is written or sent.

        Args:
            table_name: the table the rows are bound for.
            rows: the batch, with `_kafka_partition` and `_kafka_offset`.
            batch_id: the sink's id of the batch.

        Returns:
            The outcome, with the alerts due (the reference window now holds the batch).
        """
        rules = self.cfg.rules_for(table_name) if self.cfg.enabled else {}
        run = BatchRun(table_name, rows, batch_id, datetime.now(UTC))
        if not rules or rows.num_rows == 0:
            return run.outcome()
        fb = FrameBuilder(table_name, rows)
        gx = gx_runtime.expectations()
        by_kind: dict[str, dict[str, CheckRule]] = defaultdict(dict)
        for check, rule in rules.items():
            by_kind[kind_of(check)][check] = rule

        row_checks(run, fb, gx, by_kind["row"], self.cfg.alert_sample_rows)
        reference = self._reference(table_name)
        batch_checks(run, fb, gx, by_kind, reference, self.cfg)
        outcome = run.outcome()
        reference.add(run.batch_key, run.now, run.profile)
        outcome.alerts = batch_alerts(run, outcome, self.alerts, self.cfg.alert_sample_rows)
        return outcome

    # Reference window and alert state ----------------------------------------------------

    def _reference(self, table_name: str) -> ReferenceWindow:
        """The table's reference window; the first call rebuilds it, and the table's
        firing checks, from `dq_results`."""
        if table_name not in self._references:
            window = ReferenceWindow(
                self.cfg.reference_batches, timedelta(hours=self.cfg.reference_hours)
            )
            self._references[table_name] = window
            since = datetime.now(UTC) - timedelta(hours=self.cfg.reference_hours)
            fields = ("check", "passed", "skipped", "evaluated_at", "batch_key", "details")
            recent = self.store.recent_results(since, table_name, fields).to_pylist()
            recent.sort(key=lambda r: r["evaluated_at"])
            window.restore(recent)
            for check, since_at in failing_since(recent).items():
                self.alerts.restore(table_name, check, since_at)
        return self._references[table_name]
