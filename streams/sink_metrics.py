"""The sink's health: Prometheus metrics, /healthz and /readyz on the metrics port, and the
status file `freshlabel status` shows.

Freshness here is "visible in Iceberg" lag: the commit time of the batch minus each row's
`lag_field` (the impression's event time for enriched rows and labels). Consumer lag is per
partition the sink holds (infra/worker_health.py). Commit failures count commits that
raised (after the conflict retries, or on a broker, catalog or storage error), apart from
the conflicts that a retry absorbed.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from kafka import KafkaConsumer
from prometheus_client import Counter, Histogram

from infra.config import Settings
from infra.worker_health import WorkerMetrics, metric_value
from infra.worker_status import percentile

LAG_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600, 86400)


class SinkMetrics(WorkerMetrics):
    """One sink process's metrics (infra/worker_health.py's `WorkerMetrics`: registry,
    health, lag, status file `sink-<table>`), per table."""

    def __init__(self, settings: Settings, table_name: str, lag_field: str | None) -> None:
        super().__init__(settings, f"sink-{table_name}", settings.sink.liveness_timeout_s)
        self.table_name = table_name
        self.lag_field = lag_field
        labels = {"table": table_name}

        def counter(name: str, doc: str) -> Any:
            full = f"freshlabel_sink_{name}_total"
            return self.metric(Counter, full, doc, ["table"]).labels(**labels)

        self.rows = counter("rows", "Rows committed")
        self.commits = counter("commits", "Iceberg commits")
        self.quarantined = counter("quarantined", "Rows a critical quality check quarantined")
        self.dead_letters = counter("dead_letters", "Records refused by decoding (to the DLQ)")
        self.conflicts = counter(
            "commit_conflicts", "Commits another writer got in first (retried on a fresh ledger)"
        )
        self.commit_failures = self.metric(
            Counter,
            "freshlabel_sink_commit_failures_total",
            "Commits that raised (conflicts past sink.commit_attempts, broker, catalog or "
            "storage errors); the batch is read again from the ledger",
            ["table", "error"],
        )
        self.counts: dict[str, object] = {}
        self.visible_lag = self.metric(
            Histogram,
            "freshlabel_visible_lag_seconds",
            "Event time to row visible in Iceberg (commit of the snapshot that added it)",
            ["table"],
            buckets=LAG_BUCKETS,
        ).labels(**labels)
        self._lags: deque[float] = deque(maxlen=10_000)
        self.serve(settings.sink.metrics_host, settings.sink.metrics_port)
        # Visible from the start: a sink killed before its first commit is still listed.
        self.write_status()

    def observe_lag(self, consumer: KafkaConsumer, group: str) -> None:
        """Refresh the consumer lag of the partitions held (at most once a second)."""
        self.lag.observe(consumer, group)

    def commit_failed(self, error: BaseException) -> None:
        """A commit raised `error` (its type becomes the `error` label)."""
        self.commit_failures.labels(self.table_name, type(error).__name__).inc()

    def record_commit(self, rows: pa.Table, committed_at: float, quarantined: int) -> None:
        self.rows.inc(rows.num_rows)
        self.commits.inc()
        self.quarantined.inc(quarantined)
        if self.lag_field and self.lag_field in rows.column_names and rows.num_rows:
            times = pc.drop_null(rows.column(self.lag_field)).cast(pa.int64()).to_numpy()
            lags = np.maximum(committed_at - times / 1e6, 0.0)
            for lag in lags.tolist():
                self.visible_lag.observe(lag)
            self._lags.extend(lags[-(self._lags.maxlen or 0) :].tolist())
        self.write_status()

    def snapshot(self) -> dict[str, object]:
        """The status file's metrics: counters, visible-lag percentiles, the sink's counts."""
        return {
            "table": self.table_name,
            "rows_committed": metric_value(self.rows, "_total"),
            "commits": metric_value(self.commits, "_total"),
            "rows_quarantined": metric_value(self.quarantined, "_total"),
            "dead_letters": metric_value(self.dead_letters, "_total"),
            "lag_field": self.lag_field,
            "visible_lag_p50_s": percentile(self._lags, 50),
            "visible_lag_p95_s": percentile(self._lags, 95),
            # The sink's own counts: each consumed record's fate (they add up).
            **self.counts,
        }
