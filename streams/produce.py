"""Write events to their topics, keyed, and wait until the broker acknowledged all of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from kafka import KafkaProducer

from schemas.base import Event


def produce_events(
    producer: KafkaProducer, events: Iterable[Event], timeout_s: float = 60
) -> dict[str, int]:
    futures = []
    counts: Counter[str] = Counter()
    for event in events:
        futures.append(producer.send(event.topic, key=event.key.encode(), value=event.to_bytes()))
        counts[event.topic] += 1
    producer.flush(timeout=timeout_s)
    for future in futures:
        future.get(timeout=timeout_s)
    return dict(counts)
