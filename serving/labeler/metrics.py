"""The labeler's health: Prometheus metrics, /healthz and /readyz on the metrics port
(infra/worker_health.py), plus the status file `freshlabel status` reads.

Two classes of traffic reach the teacher: `live` (`label run`, the stream) and `backfill`
(`label backfill`, history). Each process serves one class; its teacher metrics carry a
`traffic` label and its status file says, for its class, the pairs/s the teacher scored over
the last minute and the p50/p95 of its teacher round trips, plus, for live traffic, the
freshness p50/p95 (impression event time to label acknowledged by the broker). The live
labeler's status file is `labeler`, a backfill's is `labeler-backfill`.

The backlog (`freshlabel_labeler_backlog`, `freshlabel_consumer_lag_records`) is refreshed
right after every poll, when the fetch just made the high watermarks fresh (after a long
batch they would be as old as the batch, hiding what arrived meanwhile), and once a second
while the labeler waits for an unavailable teacher.

With a student configured (`labeler.student_dir`), the live labeler also exports the drift
signal: `freshlabel_labeler_student_disagreement{dimension,group}` and
`freshlabel_labeler_student_window_rows{dimension,group}` (dimension `lang` or `family`),
`freshlabel_labeler_student_compared_total`, and a `student` section in its status file
(serving/labeler/drift.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

from kafka import KafkaConsumer
from prometheus_client import Counter, Gauge, Histogram

from infra.config import Settings
from infra.worker_health import WorkerMetrics, metric_value
from infra.worker_status import percentile
from schemas import EnrichedImpression, RelevanceLabel

Traffic = Literal["live", "backfill"]
# Status file (worker) name of each class of traffic.
STATUS_NAMES: dict[Traffic, str] = {"live": "labeler", "backfill": "labeler-backfill"}
# Window of the pairs/s and labels/s rates.
RATE_WINDOW_S = 60.0


class _WindowRate:
    """Events per second over the last `RATE_WINDOW_S` (or since `started`, when younger:
    a first batch is not a burst rate)."""

    def __init__(self, started: float) -> None:
        self.started = started
        self._events: deque[tuple[float, int]] = deque()

    def add(self, n: int, now: float) -> None:
        self._events.append((now, n))

    def per_s(self, now: float) -> float:
        while self._events and self._events[0][0] < now - RATE_WINDOW_S:
            self._events.popleft()
        window = min(RATE_WINDOW_S, max(now - self.started, 1.0))
        return round(sum(n for _, n in self._events) / window, 2)


class LabelerMetrics(WorkerMetrics):
    """One labeler process's metrics (infra/worker_health.py's `WorkerMetrics`: registry,
    health, lag, status file), for its one class of traffic."""

    def __init__(self, settings: Settings, serve: bool = True, traffic: Traffic = "live") -> None:
        """
        Args:
            settings: The platform settings (`labeler`).
            serve: Write a status file and serve the metrics port (when one is configured);
                False keeps the metrics in memory only.
            traffic: The class of traffic this process sends to the teacher.
        """
        cfg = settings.labeler
        super().__init__(settings, STATUS_NAMES[traffic] if serve else None, cfg.liveness_timeout_s)
        self.traffic: Traffic = traffic
        self._started = self._status_at = time.monotonic()
        self._backlog_written = 0.0
        metric = self.metric
        self.labels = metric(
            Counter, "freshlabel_labels_total", "Labels written", ["teacher_version"]
        )
        self.dead_letters = metric(
            Counter, "freshlabel_labeler_dead_letters_total", "Enriched rows sent to the DLQ"
        )
        self.scorer_errors = metric(
            Counter, "freshlabel_teacher_errors_total", "Failed teacher calls (retried)"
        )
        self.scorer_latency = metric(
            Histogram,
            "freshlabel_teacher_batch_seconds",
            "Time to score one batch of cache misses (a teacher round trip)",
            ["traffic"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
        )
        self.pairs = metric(
            Counter,
            "freshlabel_teacher_pairs_total",
            "Pairs scored by the teacher (cache misses)",
            ["traffic"],
        )
        self.pair_rate = metric(
            Gauge,
            "freshlabel_teacher_pairs_per_second",
            "Pairs scored by the teacher per second over the last minute",
            ["traffic"],
        )
        self.hit_rate = metric(
            Gauge, "freshlabel_dedup_hit_rate", "Share of rows whose score came from the cache"
        )
        self.backlog = metric(Gauge, "freshlabel_labeler_backlog", "Enriched rows not yet labeled")
        self.rate = metric(
            Gauge, "freshlabel_labels_per_second", "Labels per second over the last minute"
        )
        self.event_lag = metric(
            Histogram,
            "freshlabel_label_event_lag_seconds",
            "Impression event time to label produced (visibility in Iceberg adds the sink's "
            "commit interval)",
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 900, 3600),
        )
        # The drift signal (serving/labeler/drift.py), when a student is configured.
        self.student_disagreement = metric(
            Gauge,
            "freshlabel_labeler_student_disagreement",
            "Share of the last labeler.drift_window_rows compared rows of a group whose "
            "student label differs from the teacher's (dimension: lang or family)",
            ["dimension", "group"],
        )
        self.student_rows = metric(
            Gauge,
            "freshlabel_labeler_student_window_rows",
            "Compared rows in a group's disagreement window (below labeler.drift_min_rows "
            "it never alerts)",
            ["dimension", "group"],
        )
        self.student_compared = metric(
            Counter,
            "freshlabel_labeler_student_compared",
            "Labeled rows whose teacher label was compared with the student's",
        )
        # The status file's `student` section (set by the drift monitor).
        self.student_status: Callable[[], dict[str, Any]] | None = None
        self.group_id = cfg.group_id
        self._labels_rate = _WindowRate(self._started)
        # Recent teacher calls and event lags, for the percentiles in the status file.
        self._latencies: deque[float] = deque(maxlen=1000)
        self._event_lags: deque[float] = deque(maxlen=10_000)
        self._pairs_rate = _WindowRate(self._started)
        if serve:
            port = cfg.metrics_port if traffic == "live" else cfg.backfill_metrics_port
            self.serve(cfg.metrics_host, port)
        # Visible from the start: a labeler killed before its first batch is still listed.
        self.write_status()

    def observe_backlog(self, consumer: KafkaConsumer, in_hand: int = 0) -> None:
        """Backlog and per-partition consumer lag of the partitions held: the high watermark
        from fetch responses (ListOffsets "latest" is wrong on Tansu) minus the position.

        Args:
            consumer: The labeler's consumer, just after a poll (the watermarks are as
                fresh as its last fetch).
            in_hand: Records polled but not labeled yet (behind the position): they count
                in the backlog, not in the per-partition lag.
        """
        backlog = self.lag.observe(consumer, self.group_id, force=True) + in_hand
        self.backlog.set(backlog)
        if backlog != self._backlog_written:
            self.write_status()  # `freshlabel status` sees the lag before the batch ends

    def observe_backlog_of(self, rows: int) -> None:
        """Set the backlog directly (a backfill: rows of history still to label)."""
        self.backlog.set(rows)

    def observe_teacher(self, seconds: float, pairs: int) -> None:
        """One teacher round trip of `pairs` pairs took `seconds`."""
        self.scorer_latency.labels(self.traffic).observe(seconds)
        self.pairs.labels(self.traffic).inc(pairs)
        self._latencies.append(seconds)
        now = time.monotonic()
        self._pairs_rate.add(pairs, now)
        self.pair_rate.labels(self.traffic).set(self.pairs_per_s(now))
        self.health.tick()  # a teacher call returned: the loop is moving
        if now - self._status_at >= 1.0:  # a long batch still shows its progress
            self.write_status()

    def pairs_per_s(self, now: float | None = None) -> float:
        """Pairs the teacher scored per second over the last `RATE_WINDOW_S` (or since
        start, when younger)."""
        return self._pairs_rate.per_s(time.monotonic() if now is None else now)

    def record_batch(
        self, labels: Sequence[RelevanceLabel], rows: Sequence[EnrichedImpression], hit_rate: float
    ) -> None:
        """Count a published batch: labels by version, the live rows' freshness (event time
        to now, after the broker acknowledged them), the hit rate; rewrite the status."""
        now = time.time()
        for label in labels:
            self.labels.labels(label.teacher_version).inc()
        # A backfill labels history: its event times say nothing about freshness.
        for row in rows if self.traffic == "live" else ():
            lag = max(0.0, now - row.event_time.timestamp())
            self.event_lag.observe(lag)
            self._event_lags.append(lag)
        self.hit_rate.set(hit_rate)
        at = time.monotonic()
        self._labels_rate.add(len(labels), at)
        self.rate.set(self._labels_rate.per_s(at))
        self.write_status()

    def observe_student(
        self, compared: int, groups: dict[tuple[str, str], tuple[float, int]]
    ) -> None:
        """A batch's teacher-student comparisons: `compared` rows, and the window rate and
        rows of each (dimension, group) they touched."""
        self.student_compared.inc(compared)
        for (dimension, group), (rate, rows) in groups.items():
            self.student_disagreement.labels(dimension, group).set(rate)
            self.student_rows.labels(dimension, group).set(rows)

    def snapshot(self) -> dict[str, Any]:
        """The status file's metrics: this class of traffic's rates and percentiles, the
        counters, the labels by teacher version, the drift signal's section."""
        t = self.traffic
        per_class: dict[str, Any] = {
            f"{t}_pairs_per_s": self.pairs_per_s(),
            f"{t}_teacher_p50_s": percentile(self._latencies, 50),
            f"{t}_teacher_p95_s": percentile(self._latencies, 95),
        }
        if t == "live":
            per_class["live_freshness_p50_s"] = percentile(self._event_lags, 50)
            per_class["live_freshness_p95_s"] = percentile(self._event_lags, 95)
        return {
            "traffic": t,
            **per_class,
            "teacher_pairs": metric_value(self.pairs, "_total"),
            "labels_total": metric_value(self.labels, "_total"),
            "labels_per_s": round(metric_value(self.rate), 2),
            "dedup_hit_rate": round(metric_value(self.hit_rate), 4),
            "backlog": metric_value(self.backlog),
            "teacher_errors": metric_value(self.scorer_errors, "_total"),
            "teacher_batches": metric_value(self.scorer_latency, "_count"),
            "teacher_seconds": round(metric_value(self.scorer_latency, "_sum"), 3),
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
            "dead_letters": metric_value(self.dead_letters, "_total"),
            **({"student": self.student_status()} if self.student_status else {}),
        }

    def write_status(self, stopped: bool = False, error: str | None = None) -> None:
        """Rewrite this process's status file (infra/worker_status.py); no-op without one.

        Args:
            stopped: the labeler ends cleanly.
            error: the labeler dies on this error (one line); it stays failed even if a
                clean-stop write follows.
        """
        self._status_at = time.monotonic()
        self._backlog_written = metric_value(self.backlog)
        super().write_status(stopped=stopped, error=error)
