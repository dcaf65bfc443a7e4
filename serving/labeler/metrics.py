"""The labeler's health: Prometheus metrics, /healthz and /readyz on the metrics port
(infra/worker_health.py), plus the status file `freshlabel status` reads."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from kafka import KafkaConsumer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from infra.config import Settings
from infra.worker_health import ConsumerLag, WorkerHealth
from infra.worker_status import StatusFile, percentile
from schemas import EnrichedImpression, RelevanceLabel


class LabelerMetrics:
    def __init__(self, settings: Settings, serve: bool = True) -> None:
        self.registry = CollectorRegistry()
        # Only the long-running labeler has a status file; a backfill (serve=False) is a job.
        self.status_file = StatusFile(settings, "labeler") if serve else None
        self.labels = Counter(
            "freshlabel_labels_total", "Labels written", ["teacher_version"], registry=self.registry
        )
        self.dead_letters = Counter(
            "freshlabel_labeler_dead_letters_total",
            "Enriched rows sent to the DLQ",
            registry=self.registry,
        )
        self.scorer_errors = Counter(
            "freshlabel_teacher_errors_total",
            "Failed teacher calls (retried)",
            registry=self.registry,
        )
        self.scorer_latency = Histogram(
            "freshlabel_teacher_batch_seconds",
            "Time to score one batch of cache misses",
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
            registry=self.registry,
        )
        self.hit_rate = Gauge(
            "freshlabel_dedup_hit_rate",
            "Share of rows whose score came from the cache",
            registry=self.registry,
        )
        self.backlog = Gauge(
            "freshlabel_labeler_backlog", "Enriched rows not yet labeled", registry=self.registry
        )
        self.rate = Gauge(
            "freshlabel_labels_per_second",
            "Labels per second over the last minute",
            registry=self.registry,
        )
        self.event_lag = Histogram(
            "freshlabel_label_event_lag_seconds",
            "Impression event time to label produced (visibility in Iceberg adds the sink's "
            "commit interval)",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600),
            registry=self.registry,
        )
        self.health = WorkerHealth(self.registry, settings.labeler.liveness_timeout_s)
        self.lag = ConsumerLag(self.registry)
        self.group_id = settings.labeler.group_id
        self._recent: deque[tuple[float, int]] = deque()
        # Recent teacher calls and event lags, for the percentiles in the status file.
        self._latencies: deque[float] = deque(maxlen=1000)
        self._event_lags: deque[float] = deque(maxlen=10_000)
        if serve and settings.labeler.metrics_port:
            self.health.serve(settings.labeler.metrics_host, settings.labeler.metrics_port)
        # Visible from the start: a labeler killed before its first batch is still listed.
        self.write_status()

    def tick(self) -> None:
        """The labeler's loop turned (liveness)."""
        self.health.tick()

    def ready(self, ok: bool, reason: str = "") -> None:
        """Whether the labeler can work now, and why (not); /readyz shows the reason."""
        self.health.ready(ok, reason)

    def observe_backlog(self, consumer: KafkaConsumer) -> None:
        """Backlog and per-partition consumer lag of the partitions held: the high watermark
        from fetch responses (ListOffsets "latest" is wrong on Tansu) minus the position."""
        self.backlog.set(self.lag.observe(consumer, self.group_id, force=True))

    def observe_teacher(self, seconds: float) -> None:
        self.scorer_latency.observe(seconds)
        self._latencies.append(seconds)
        self.health.tick()  # a teacher call returned: the loop is moving

    def record_batch(
        self, labels: Sequence[RelevanceLabel], rows: Sequence[EnrichedImpression], hit_rate: float
    ) -> None:
        now = time.time()
        for label in labels:
            self.labels.labels(label.teacher_version).inc()
        for row in rows:
            lag = max(0.0, now - row.event_time.timestamp())
            self.event_lag.observe(lag)
            self._event_lags.append(lag)
        self.hit_rate.set(hit_rate)
        self._recent.append((now, len(labels)))
        while self._recent and self._recent[0][0] < now - 60:
            self._recent.popleft()
        span = max(1.0, now - self._recent[0][0]) if self._recent else 1.0
        self.rate.set(sum(n for _, n in self._recent) / span)
        self.write_status()

    def snapshot(self) -> dict[str, Any]:
        def value(metric: Any, suffix: str = "") -> float:
            total = 0.0
            for family in metric.collect():
                for sample in family.samples:
                    if sample.name.endswith(suffix):
                        total += sample.value
            return total

        return {
            "labels_total": value(self.labels, "_total"),
            "labels_per_s": round(self.rate._value.get(), 2),
            "dedup_hit_rate": round(self.hit_rate._value.get(), 4),
            "backlog": self.backlog._value.get(),
            "teacher_errors": value(self.scorer_errors, "_total"),
            "teacher_batches": value(self.scorer_latency, "_count"),
            "teacher_seconds": round(value(self.scorer_latency, "_sum"), 3),
            "teacher_latency_p50_s": percentile(self._latencies, 50),
            "teacher_latency_p95_s": percentile(self._latencies, 95),
            "event_to_label_p50_s": percentile(self._event_lags, 50),
            "event_to_label_p95_s": percentile(self._event_lags, 95),
            "versions": {
                s.labels["teacher_version"]: s.value
                for family in self.labels.collect()
                for s in family.samples
                if s.name.endswith("_total")
            },
            "dead_letters": value(self.dead_letters, "_total"),
        }

    def write_status(self, stopped: bool = False, error: str | None = None) -> None:
        """Rewrite this process's status file (infra/worker_status.py); no-op without one.

        Args:
            stopped: the labeler ends cleanly.
            error: the labeler dies on this error (one line); it stays failed even if a
                clean-stop write follows.
        """
        if self.status_file is not None:
            self.status_file.write(self.snapshot(), stopped=stopped, error=error)
