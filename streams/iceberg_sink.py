"""Topic -> Iceberg table, exactly once.

The table is the ledger: each commit records, in its snapshot summary, the next Kafka
offset of every partition it has written (streams/offsets.py). On start, and whenever the
consumer group hands this process a partition, the sink seeks to the table's offsets, so a
crash anywhere (before or after the Iceberg commit, before the Kafka offset commit) neither
loses nor repeats a row. Kafka group offsets are committed too, but only as a courtesy for
lag monitoring.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kafka import ConsumerRebalanceListener, OffsetAndMetadata, TopicPartition
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from infra.catalog import ensure_namespace, ensure_table, open_catalog
from infra.config import Settings
from schemas.base import Event
from streams.arrow_rows import SourcePosition, to_arrow
from streams.decode import DeadLetterWriter, Decoder
from streams.dedupe import DayKeyIndex
from streams.dlq import DeadLetter
from streams.kafka_io import consumer, producer
from streams.offsets import committed_offsets, offsets_property
from streams.sink_metrics import SinkMetrics

if TYPE_CHECKING:
    from quality.gate import QualityGate

log = logging.getLogger(__name__)


@dataclass
class SinkStats:
    rows_committed: int = 0
    commits: int = 0
    dead_letters: int = 0
    skipped_already_committed: int = 0
    # Same event key as a row already in the table (or earlier in the batch): kept once.
    duplicates_dropped: int = 0
    # Rows a critical data-quality check sent to `<table>_quarantine` (quality/gate.py).
    rows_quarantined: int = 0
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class _Batch:
    events: list[Event] = field(default_factory=list)
    positions: list[SourcePosition] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.events)

    def saw(self, partition: int, offset: int) -> None:
        self.next_offsets[partition] = max(self.next_offsets.get(partition, 0), offset + 1)

    def drop_partitions(self, partitions: set[int]) -> None:
        keep = [i for i, p in enumerate(self.positions) if p.partition not in partitions]
        self.events = [self.events[i] for i in keep]
        self.positions = [self.positions[i] for i in keep]
        for p in partitions:
            self.next_offsets.pop(p, None)


class _SeekToTable(ConsumerRebalanceListener):
    def __init__(self, sink: IcebergSink) -> None:
        self.sink = sink

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Another process may own these now; it re-reads them from the table's offsets.
        self.sink.batch.drop_partitions({tp.partition for tp in revoked})

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.sink.seek_to_table(assigned)
        self.sink.last_activity = time.monotonic()


class IcebergSink:
    def __init__(
        self,
        settings: Settings,
        topic: str,
        table_name: str,
        group_id: str | None = None,
        batch_rows: int | None = None,
        batch_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.group_id = group_id or f"freshlabel-sink-{table_name}"
        cfg = settings.sink
        self.batch_rows = batch_rows or cfg.batch_rows
        self.batch_seconds = batch_seconds if batch_seconds is not None else cfg.batch_seconds
        self.decoder: Decoder[Event] = Decoder(topic, settings.decode, self.group_id)
        model = self.decoder.model
        catalog = open_catalog(settings)
        ensure_namespace(catalog, settings.catalog.namespace)
        self.table: Table = ensure_table(
            catalog, settings.catalog.namespace, table_name, schema_of=model.table
        )
        self.dedupe = DayKeyIndex(model.dedupe_key, model.time_field) if model.dedupe_key else None
        self.gate: QualityGate | None = None
        if settings.quality.enabled:
            from quality.gate import QualityGate  # pandas and GX load only when enabled

            self.gate = QualityGate(settings, catalog)
        self.dead_letters = DeadLetterWriter(producer(settings))
        self.metrics = SinkMetrics(settings, table_name, model.lag_field)
        self.consumer = consumer(settings, self.group_id)
        self.batch = _Batch()
        self.stats = SinkStats()
        # Idle time counts from the group assignment (a join takes seconds), not from start.
        self.last_activity = float("inf")

    def seek_to_table(self, partitions: set[TopicPartition]) -> None:
        self.table = self.table.refresh()
        if self.dedupe is not None:
            self.dedupe.forget()
        offsets = committed_offsets(self.table, self.topic)
        for tp in partitions:
            if tp.partition in offsets:
                self.consumer.seek(tp, offsets[tp.partition])
            else:
                self.consumer.seek_to_beginning(tp)

    def run(
        self,
        idle_timeout_s: float | None = None,
        max_rows: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SinkStats:
        """Consume until idle for `idle_timeout_s`, `max_rows` committed, or `should_stop()`."""
        self.consumer.subscribe([self.topic], listener=_SeekToTable(self))
        join_deadline = time.monotonic() + 60.0
        try:
            while not should_stop():
                polled = self.consumer.poll(timeout_ms=500)
                for records in polled.values():
                    for record in records:
                        self._take(record.partition, record.offset, record.value, record.key)
                        if len(self.batch) >= self.batch_rows:
                            self.commit()
                if polled:
                    self.last_activity = time.monotonic()
                if self._batch_due():
                    self.commit()
                if max_rows is not None and self.stats.rows_committed >= max_rows:
                    break
                now = time.monotonic()
                if idle_timeout_s is not None and now - self.last_activity > idle_timeout_s:
                    break
                if self.last_activity == float("inf") and now > join_deadline:
                    raise TimeoutError(
                        f"sink for {self.topic}: no partitions assigned to group "
                        f"{self.group_id} within 60 s; is the broker up at "
                        f"{self.settings.broker.bootstrap}?"
                    )
            self.commit()
        finally:
            self.consumer.close(autocommit=False)
            self.dead_letters.producer.close()
            if self.gate is not None:
                self.gate.close()
            self.metrics.write_status(stopped=True)
        self.stats.dead_letters_by_reason = self.decoder.counters.by_reason()
        return self.stats

    def _take(self, partition: int, offset: int, value: bytes | None, key: bytes | None) -> None:
        decoded = self.decoder.decode_bytes(value, partition, offset, key)
        if isinstance(decoded, DeadLetter):
            self.dead_letters.send(decoded)
            self.stats.dead_letters += 1
            self.metrics.dead_letters.inc()
        else:
            self.batch.events.append(decoded)
            self.batch.positions.append(SourcePosition(partition, offset))
        self.batch.saw(partition, offset)

    def _batch_due(self) -> bool:
        if not self.batch.next_offsets:
            return False
        return (
            len(self.batch) >= self.batch_rows
            or time.monotonic() - self.batch.started >= self.batch_seconds
        )

    def commit(self) -> None:
        batch, self.batch = self.batch, _Batch()
        if not batch.next_offsets:
            return
        # Dead letters must be acknowledged before their offsets are recorded as done.
        self.dead_letters.flush()
        for attempt in range(1, 11):
            try:
                self._commit_once(batch)
                break
            except CommitFailedException:
                if attempt == 10:
                    raise
                log.warning("commit conflict on %s, retrying (%d)", self.table.name(), attempt)
                time.sleep(0.2 * attempt)
        self.consumer.commit(
            {
                TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                for p, o in batch.next_offsets.items()
            }
        )

    def _commit_once(self, batch: _Batch) -> None:
        self.table = self.table.refresh()
        done = committed_offsets(self.table, self.topic)
        # After a rebalance another sink may have committed part of this batch already.
        keep = [
            i for i, pos in enumerate(batch.positions) if pos.offset >= done.get(pos.partition, 0)
        ]
        self.stats.skipped_already_committed += len(batch.positions) - len(keep)
        if self.dedupe is not None and keep:
            fresh = self.dedupe.new_indices(self.table, [batch.events[i] for i in keep])
            self.stats.duplicates_dropped += len(keep) - len(fresh)
            keep = [keep[i] for i in fresh]
        merged = dict(done)
        for partition, offset in batch.next_offsets.items():
            merged[partition] = max(merged.get(partition, 0), offset)
        if merged == done:
            return
        if not keep:
            # Only dead letters (or already-committed rows): record the offsets alone.
            with self.table.transaction() as tx:
                tx.append(
                    to_arrow(self.table, [], [], "", datetime.now(UTC)),
                    snapshot_properties=offsets_property(self.topic, merged),
                )
            self.stats.commits += 1
            return
        first = min(batch.positions[i].offset for i in keep)
        batch_id = f"{self.topic}@{first}-{max(batch.next_offsets.values())}/{time.time_ns()}"
        rows = to_arrow(
            self.table,
            [batch.events[i] for i in keep],
            [batch.positions[i] for i in keep],
            batch_id,
            datetime.now(UTC),
        )
        table_name = self.table.name()[-1]
        quarantined = 0
        if self.gate is not None and self.gate.applies_to(table_name):
            # Critical failures go to quarantine (their offsets still count as consumed).
            outcome = self.gate.guard(table_name, rows, batch_id)
            rows = outcome.passed
            quarantined = outcome.quarantined.num_rows
            self.stats.rows_quarantined += quarantined
        self.table.append(rows, snapshot_properties=offsets_property(self.topic, merged))
        committed_at = time.time()
        if self.dedupe is not None:
            self.dedupe.remember([batch.events[i] for i in keep])
        self.stats.rows_committed += rows.num_rows
        self.stats.commits += 1
        self.metrics.record_commit(rows, committed_at, quarantined)
