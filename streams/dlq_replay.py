"""`freshlabel dlq replay`: send dead letters' original records back to their source topic.

After the cause is fixed (a producer corrected, a decode limit raised, the teacher repaired),
the letters of `<topic>.dlq` that match a reason (and a time) are produced again, key and
value bytes as the letter kept them, to `source_topic` (or another topic). The guarantee:
every matching letter whose record is whole is sent once per run, in DLQ order per
partition; a record that still fails is dead-lettered again by the consumer, never lost.
Running the same replay twice sends the records twice: the sinks keep each event once by its
key within `sink.dedupe_horizon_days` (docs/reliability.md), so a repeat is harmless inside
that horizon; `--since` keeps a second run to newer letters. A letter whose value was
truncated to fit (`value_truncated`) is not replayed from its prefix: it is counted and named
by its source partition and offset, where the whole record is while the topic keeps it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from pydantic import BaseModel, Field, ValidationError

from infra.config import Settings
from infra.kafka_io import consumer, producer
from streams.dlq import DeadLetter, Reason


class ReplayRecord(BaseModel):
    """One record to produce again."""

    topic: str
    key: bytes | None
    value: bytes | None


class ReplayReport(BaseModel):
    """What a replay read, sent and passed over."""

    read: int = 0
    replayed: Counter[str] = Field(default_factory=Counter)  # by reason
    skipped: Counter[str] = Field(default_factory=Counter)  # filtered out, by reason
    truncated: list[str] = Field(default_factory=list)  # "topic/partition/offset"
    unreadable: int = 0  # DLQ records that are not dead letters


def select(
    letters: Iterable[bytes],
    reasons: set[Reason] | None,
    since: datetime | None,
    to_topic: str | None,
    report: ReplayReport,
) -> Iterator[ReplayRecord]:
    """The records to produce again for raw DLQ values, in order; counts into `report`.

    Args:
        letters: the DLQ's record values (DeadLetter JSON).
        reasons: only letters with one of these reasons; None for all.
        since: only letters that failed at or after this time (aware); None for all.
        to_topic: produce here instead of each letter's source topic.
        report: updated with what was read, replayed, skipped and truncated.

    Returns:
        An iterator of the records to send.
    """
    for raw in letters:
        report.read += 1
        try:
            letter = DeadLetter.model_validate_json(raw)
        except ValidationError:
            report.unreadable += 1
            continue
        if (reasons and letter.reason not in reasons) or (since and letter.failed_at < since):
            report.skipped[letter.reason.value] += 1
            continue
        if letter.value_truncated or letter.key_truncated:
            report.truncated.append(f"{letter.source_topic}/{letter.partition}/{letter.offset}")
            continue
        report.replayed[letter.reason.value] += 1
        yield ReplayRecord(
            topic=to_topic or letter.source_topic, key=letter.key, value=letter.value
        )


def _dlq_values(settings: Settings, dlq_topic: str, idle_timeout_s: float) -> Iterator[bytes]:
    """Every record value now in `dlq_topic`, from the earliest offset, without a consumer
    group (nothing is committed); ends after `idle_timeout_s` without new records."""
    from kafka import TopicPartition

    reader = consumer(settings, None)
    try:
        partitions = reader.partitions_for_topic(dlq_topic)
        if not partitions:
            raise ValueError(f"topic {dlq_topic} does not exist; `freshlabel status` lists topics")
        tps = [TopicPartition(dlq_topic, p) for p in sorted(partitions)]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        last = time.monotonic()
        while time.monotonic() - last < idle_timeout_s:
            polled = reader.poll(timeout_ms=300)
            for batch in polled.values():
                for record in batch:
                    yield record.value
            if polled:
                last = time.monotonic()
    finally:
        reader.close()


def replay(
    settings: Settings,
    dlq_topic: str,
    reasons: set[Reason] | None = None,
    since: datetime | None = None,
    to_topic: str | None = None,
    dry_run: bool = False,
    idle_timeout_s: float = 5.0,
) -> ReplayReport:
    """Produce the matching letters' records again and wait until the broker has them all.

    Args:
        settings: where the broker is (broker.*).
        dlq_topic: the dead-letter topic to read, e.g. `impressions.dlq`.
        reasons: only these reasons (None: all).
        since: only letters that failed at or after this time.
        to_topic: produce here instead of each letter's source topic.
        dry_run: count only, send nothing.
        idle_timeout_s: the DLQ is read until no record came for this long.

    Returns:
        The counts of what was read, replayed, skipped and left (truncated).

    Raises:
        ValueError: the DLQ topic does not exist.
        kafka.errors.KafkaError: the broker refused a send.
    """
    report = ReplayReport()
    records = select(
        _dlq_values(settings, dlq_topic, idle_timeout_s), reasons, since, to_topic, report
    )
    if dry_run:
        for _ in records:
            pass
        return report
    with producer(settings) as out:
        pending = []
        for record in records:
            pending.append(out.send(record.topic, key=record.key, value=record.value))
            if len(pending) >= _SETTLE_EVERY:
                _settle(out, pending)
        _settle(out, pending)
    return report


_SETTLE_EVERY = 10_000  # sends in flight before waiting for the broker's acks


def _settle(out: KafkaProducer, pending: list[Any]) -> None:
    """Wait until every send so far is acknowledged; raises the first failure."""
    out.flush()
    for future in pending:
        future.get(timeout=60)
    pending.clear()
