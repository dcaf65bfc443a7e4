"""Produce a world's events to Kafka, paced to a rate, counting what the broker acknowledged."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from kafka.errors import KafkaError

from infra.config import Settings
from infra.kafka_io import producer
from infra.process import port_open
from schemas.base import Event

# Few, large batches: each new batch wakes kafka-python's I/O thread through a socket, and
# that GIL hand-off cost more than the sending itself (half the produce time in a profile).
BULK_OPTIONS: dict[str, Any] = {"linger_ms": 100, "batch_size": 1 << 20}


class ProduceError(RuntimeError):
    """The broker refused or never acknowledged some events; the message says how many."""


def require_broker(settings: Settings, timeout_s: float = 3.0) -> None:
    """Fail in seconds, not after kafka-python's bootstrap retries, when no broker listens."""
    servers = [s.strip() for s in settings.broker.bootstrap.split(",") if s.strip()]
    for server in servers:
        host, _, port = server.rpartition(":")
        if port.isdigit() and port_open(host.strip("[]") or "localhost", int(port), timeout_s):
            return
    raise ProduceError(
        f"no Kafka broker at {settings.broker.bootstrap}; start one with `freshlabel up` "
        "or set FRESHLABEL_BROKER__BOOTSTRAP_SERVERS"
    )


def paced(events: Iterable[Event], rate: float) -> Iterator[Event]:
    """Yield events no faster than `rate` per second (0: as fast as they come)."""
    if rate <= 0:
        yield from events
        return
    started = time.monotonic()
    for n, event in enumerate(events):
        ahead = started + n / rate - time.monotonic()
        # Sleep in slices of at least 5 ms: per-event sleeps would cost more than they pace.
        if ahead > 0.005:
            time.sleep(ahead)
        yield event


class KafkaEventWriter:
    """Sends each event to its topic, keyed by `event.key`, value `event.to_bytes()`."""

    def __init__(self, settings: Settings, **producer_options: Any) -> None:
        try:
            self._producer = producer(settings, **{**BULK_OPTIONS, **producer_options})
        except KafkaError as exc:
            raise ProduceError(
                f"no Kafka broker at {settings.broker.bootstrap} ({type(exc).__name__}); start "
                "one with `freshlabel up` or set FRESHLABEL_BROKER__BOOTSTRAP_SERVERS"
            ) from exc
        self.bootstrap = settings.broker.bootstrap
        self.sent: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()
        self._first_error: str | None = None
        # Errbacks run on the producer's I/O thread.
        self._lock = threading.Lock()

    def observe(self, event: Event) -> None:
        self.send_raw(event.topic, event.key.encode(), event.to_bytes())

    def send_raw(self, topic: str, key: bytes, value: bytes) -> None:
        future = self._producer.send(topic, key=key, value=value)
        self.sent[topic] += 1
        # Errors only: after flush() every send has completed, so acknowledged = sent - failed
        # (a success callback per record cost ~5 us of CPU).
        future.add_errback(self._on_error, topic)

    def _on_error(self, topic: str, error: BaseException) -> None:
        with self._lock:
            self.failed[topic] += 1
            if self._first_error is None:
                self._first_error = f"{topic}: {type(error).__name__}: {error}"

    def close(self, timeout_s: float = 120.0) -> dict[str, int]:
        """Flush, wait for every acknowledgement, and return acknowledged counts per topic."""
        try:
            # flush() returns once every record is acknowledged or failed; a timeout raises.
            self._producer.flush(timeout=timeout_s)
        finally:
            self._producer.close(timeout=timeout_s)
        if self.failed:
            raise ProduceError(
                f"{sum(self.failed.values())} event(s) not acknowledged by {self.bootstrap} "
                f"(per topic {dict(self.failed)} of {dict(self.sent)}; first error: "
                f"{self._first_error}); check that `freshlabel up` created the topics and the "
                "broker is healthy (`freshlabel status`), then generate again"
            )
        return {topic: sent - self.failed[topic] for topic, sent in self.sent.items()}
