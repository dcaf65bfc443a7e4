"""Kafka producers and consumers built from config, with the settings that work on Tansu."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from infra.config import Settings


def producer(settings: Settings, **options: Any) -> KafkaProducer:
    # acks=all + idempotence off: Tansu does not implement idempotent producers; downstream
    # consumers deduplicate by event id instead.
    defaults: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "retries": 5,
    }
    return KafkaProducer(
        bootstrap_servers=settings.broker.bootstrap,
        **{**defaults, **settings.broker.client_options, **options},
    )


def consumer(
    settings: Settings, group_id: str | None, *topics: str, **options: Any
) -> KafkaConsumer:
    # Group joins take half of session_timeout_ms on Tansu: keep it short.
    defaults: dict[str, Any] = {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 1000,
        "max_poll_records": 5000,
    }
    return KafkaConsumer(
        *topics,
        bootstrap_servers=settings.broker.bootstrap,
        **{**defaults, **settings.broker.client_options, **options},
    )


@contextmanager
def reader_from_start(settings: Settings, topic: str) -> Iterator[KafkaConsumer]:
    """A consumer without a group, assigned every partition of `topic` at its first
    offset (never via ListOffsets 'latest', which Tansu answers wrongly); closed after.

    Args:
        settings: Where the broker is.
        topic: The topic to read.

    Yields:
        The consumer, ready to poll.
    """
    from kafka import TopicPartition

    reader = consumer(settings, None, enable_auto_commit=False)
    try:
        partitions = reader.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        yield reader
    finally:
        reader.close()


def read_all(settings: Settings, topic: str, idle_timeout_s: float = 3.0) -> list[Any]:
    """Every record now in `topic`, read without a group (`reader_from_start`): stops after
    `idle_timeout_s` without new records."""
    import time

    with reader_from_start(settings, topic) as reader:
        records: list[Any] = []
        last = time.monotonic()
        while time.monotonic() - last < idle_timeout_s:
            polled = reader.poll(timeout_ms=300)
            for batch in polled.values():
                records.extend(batch)
            if polled:
                last = time.monotonic()
        return records


def group_offsets(settings: Settings, group_id: str, topic: str) -> dict[int, int]:
    """The offsets consumer group `group_id` has committed on `topic`, by partition (the
    next record it will read; partitions it never committed are absent).

    Args:
        settings: Where the broker is.
        group_id: The consumer group.
        topic: The topic whose partitions to report.

    Returns:
        partition -> committed offset.
    """
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=settings.broker.bootstrap, **settings.broker.client_options
    )
    try:
        committed = admin.list_group_offsets({group_id: None}).get(group_id, {})
    finally:
        admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in committed.items()
        if tp.topic == topic and meta.offset >= 0
    }
