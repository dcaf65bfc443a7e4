"""Liveness, readiness and consumer lag of a long-running worker (a sink, the labeler),
served with its Prometheus metrics on one port.

The guarantee:
- `GET /healthz` answers 200 while the worker's loop has turned (`tick()`) within
  `liveness_timeout_s`, and 503 once it has not: a wedged loop fails it even though the
  HTTP thread still answers, so Kubernetes restarts the pod.
- `GET /readyz` answers 200 while the worker last said it can work (`ready(True, ...)`:
  connected and holding an assignment), else 503 with the one-line reason it gave; a worker
  starts not ready. `freshlabel_worker_ready` exports the same as 1/0.
- `GET /metrics` is prometheus_client's own exposition of the worker's registry.
- `freshlabel_consumer_lag_records{group,topic,partition}` is the high watermark minus the
  position of each partition the worker holds, from kafka-python's `highwater()` (taken
  from fetch responses; ListOffsets "latest" is wrong on the embedded broker); partitions it
  no longer holds are dropped, so a group's lag summed over its members counts each once.

`WorkerMetrics` is what every worker's metrics hold on top of that: its own registry, the
health and lag above, and the status file `freshlabel status` reads (infra/worker_status.py),
rewritten from the worker's `snapshot()`; `metric_value` reads a metric back through
prometheus_client's public `collect()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Gauge, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics import MetricWrapperBase

from infra.config import Settings
from infra.worker_status import StatusFile

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"

Metric = TypeVar("Metric", bound=MetricWrapperBase)
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape and probe."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


class WorkerHealth:
    """A worker's liveness and readiness, fed by its loop and served over HTTP."""

    def __init__(
        self,
        registry: CollectorRegistry,
        liveness_timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        Args:
            registry: The worker's metrics registry (gets `freshlabel_worker_ready`).
            liveness_timeout_s: /healthz fails once the loop has not ticked for this long.
            clock: Monotonic seconds (tests pass a fake one).
        """
        self.registry = registry
        self.liveness_timeout_s = liveness_timeout_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last_tick = clock()  # starting counts as a turn of the loop
        self._ready = False
        self._reason = "starting"
        self._ready_gauge = Gauge(
            "freshlabel_worker_ready",
            "1 while the worker can work (connected, holding an assignment), else 0",
            registry=registry,
        )

    def tick(self) -> None:
        """The loop turned: the worker is alive."""
        self._last_tick = self.clock()

    def ready(self, ok: bool, reason: str = "") -> None:
        """Set readiness, with the one-line reason /readyz shows (why not, or what it holds)."""
        with self._lock:
            self._ready = ok
            self._reason = " ".join(reason.split()) or ("ready" if ok else "not ready")
        self._ready_gauge.set(1 if ok else 0)

    def loop_turned(self, consumer: Any, group: str, topic: str, assigned: bool) -> None:
        """One turn of a consumer worker's loop: alive, and ready while its group has
        assigned it `topic` (naming the partitions held), else not ready, saying so.

        Args:
            consumer: The worker's kafka-python KafkaConsumer.
            group: Its consumer group.
            topic: The topic it reads.
            assigned: Whether the group has assigned this member (an empty assignment
                counts: a standby member).
        """
        self.tick()
        if assigned:
            held = sorted(tp.partition for tp in consumer.assignment())
            self.ready(True, f"holding partitions {held} of {topic}")
        else:
            self.ready(False, f"consumer group {group} has not assigned {topic} yet")

    def liveness(self) -> tuple[bool, str]:
        """(alive, reason): alive while the loop ticked within `liveness_timeout_s`."""
        idle = self.clock() - self._last_tick
        if idle > self.liveness_timeout_s:
            return False, (
                f"the worker loop has not turned for {idle:.0f} s (limit "
                f"{self.liveness_timeout_s:.0f} s, liveness_timeout_s): it is wedged"
            )
        return True, f"loop turned {idle:.1f} s ago"

    def readiness(self) -> tuple[bool, str]:
        """(ready, reason) as the worker last reported them."""
        with self._lock:
            return self._ready, self._reason

    def wsgi_app(self) -> WSGIApp:
        """/healthz and /readyz answered here; every other path by prometheus_client."""
        metrics = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path in (HEALTH_PATH, READY_PATH):
                ok, reason = self.liveness() if path == HEALTH_PATH else self.readiness()
                body = f"{'ok' if ok else 'unavailable'}: {reason}\n".encode()
                status = "200 OK" if ok else "503 Service Unavailable"
                start_response(
                    status,
                    [
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                return [body]
            return metrics(environ, start_response)

        return app

    def serve(self, host: str, port: int) -> WSGIServer:
        """Serve /metrics, /healthz and /readyz on host:port from a daemon thread.

        Args:
            host: Address to bind (127.0.0.1 here, 0.0.0.0 in a pod).
            port: The worker's metrics port.

        Returns:
            The running server (`shutdown()` stops it).

        Raises:
            OSError: the port is taken; the message names it.
        """
        try:
            server = make_server(
                host, port, self.wsgi_app(), ThreadingWSGIServer, handler_class=_QuietHandler
            )
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"metrics port {host}:{port} is not free ({exc.strerror}); set another "
                "sink.metrics_port / labeler.metrics_port",
            ) from exc
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
        return server


class ConsumerLag:
    """`freshlabel_consumer_lag_records` of the partitions one consumer holds."""

    def __init__(self, registry: CollectorRegistry, every_s: float = 1.0) -> None:
        self.gauge = Gauge(
            "freshlabel_consumer_lag_records",
            "Records behind the partition's high watermark (from fetch responses), per "
            "partition this worker holds",
            ["group", "topic", "partition"],
            registry=registry,
        )
        self.every_s = every_s
        self._shown: set[tuple[str, str, str]] = set()
        self._total = 0
        self._at = float("-inf")

    def observe(self, consumer: Any, group: str, force: bool = False) -> int:
        """Refresh the gauge from `consumer` (at most every `every_s` unless `force`).

        Args:
            consumer: A kafka-python KafkaConsumer.
            group: Its consumer group (a static worker reports the group it would use).
            force: Refresh now.

        Returns:
            The lag summed over the partitions held, as of the last refresh (0 when none is
            known).
        """
        now = time.monotonic()
        if not force and now - self._at < self.every_s:
            return self._total
        self._at = now
        current: dict[tuple[str, str, str], int] = {}
        for tp in consumer.assignment():
            try:
                high = consumer.highwater(tp)
                # Known once a fetch answered; the position is then known too (bounded wait).
                position = consumer.position(tp, timeout_ms=1000) if high is not None else None
            except KafkaError:
                continue  # revoked meanwhile, or the broker is away: not this round
            if high is not None and position is not None:
                current[(group, tp.topic, str(tp.partition))] = max(0, high - position)
        for gone in self._shown - current.keys():
            self.gauge.remove(*gone)
        for labels, lag in current.items():
            self.gauge.labels(*labels).set(lag)
        self._shown = set(current)
        self._total = sum(current.values())
        return self._total

    def clear(self) -> None:
        """Forget every partition (the consumer is gone)."""
        self.gauge.clear()
        self._shown = set()
        self._total = 0


def metric_value(metric: Any, suffix: str = "") -> float:
    """The sum of a metric's samples whose name ends with `suffix`, read through
    `collect()` (a labeled child reads its own samples).

    Args:
        metric: a prometheus_client metric, or one labeled child of it.
        suffix: "_total" for a counter's count, "_sum" / "_count" for a histogram's; ""
            takes every sample (a gauge's one).

    Returns:
        The sum (0.0 when there is no such sample).
    """
    samples = (sample for family in metric.collect() for sample in family.samples)
    return sum((s.value for s in samples if s.name.endswith(suffix)), 0.0)


class WorkerMetrics:
    """The metrics every long-running worker (a sink, the labeler) keeps: its own registry,
    liveness and readiness, consumer lag, and its status file, rewritten from `snapshot()`.
    """

    def __init__(
        self, settings: Settings, status_name: str | None, liveness_timeout_s: float
    ) -> None:
        """
        Args:
            settings: The platform settings (where status files live).
            status_name: The worker's status file name; None keeps no status file.
            liveness_timeout_s: /healthz fails once the loop has not ticked for this long.
        """
        self.registry = CollectorRegistry()
        self.health = WorkerHealth(self.registry, liveness_timeout_s)
        self.lag = ConsumerLag(self.registry)
        self.status_file = StatusFile(settings, status_name) if status_name else None

    def metric(
        self, kind: type[Metric], name: str, doc: str, labels: Sequence[str] = (), **options: Any
    ) -> Metric:
        """A new metric in this worker's registry.

        Args:
            kind: Counter, Gauge or Histogram (prometheus_client).
            name: its name (a counter's with `_total`).
            doc: its help text.
            labels: its label names.
            **options: what else `kind` takes (a histogram's `buckets`).

        Returns:
            The metric (with `labels`, call `.labels(...)` for a child).
        """
        return kind(name, doc, labels, registry=self.registry, **options)

    def serve(self, host: str, port: int) -> None:
        """Serve /metrics, /healthz and /readyz on host:port; port 0 serves nothing.

        Raises:
            OSError: the port is taken; the message names it.
        """
        if port:
            self.health.serve(host, port)

    def tick(self) -> None:
        """The worker's loop turned (liveness)."""
        self.health.tick()

    def ready(self, ok: bool, reason: str = "") -> None:
        """Whether the worker can work now, and why (not); /readyz shows the reason."""
        self.health.ready(ok, reason)

    def snapshot(self) -> dict[str, Any]:
        """The counters and percentiles the status file shows (each worker its own)."""
        raise NotImplementedError

    def write_status(self, stopped: bool = False, error: str | None = None) -> None:
        """Rewrite this process's status file (infra/worker_status.py); no-op without one.

        Args:
            stopped: the worker ends cleanly.
            error: the worker dies on this error (one line); it stays failed even if a
                clean-stop write follows.
        """
        if self.status_file is not None:
            self.status_file.write(self.snapshot(), stopped=stopped, error=error)
