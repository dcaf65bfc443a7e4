"""Topic -> Iceberg table, exactly once.

The table is the ledger: each commit records, in its snapshot summary, the next Kafka
offset of every partition of the topic (streams/offsets.py), read back along the main
branch's ancestry. Every consumed record ends in exactly one place: a row of the table, a
row of `<table>_quarantine`, a dead letter in `<topic>.dlq`, or nowhere because the table
already holds it (the same event key: a redelivery, a replay) — and the status file counts
each, adding up to the records consumed.

How that holds under faults:
- Crash anywhere: on start, and whenever partitions are assigned, the sink seeks to the
  ledger, so records are read again from the first one not committed.
- Several writers (a rebalance, a zombie process, static workers that overlap): a commit is
  an optimistic transaction on the snapshot the ledger was read from. pyiceberg's blind
  retry is off for it; on a conflict the sink re-reads the ledger, drops what another
  writer committed meanwhile, and tries again. A partition whose batch does not start at the
  ledger (the ledger moved back: a rollback) is not committed; the sink re-reads it from
  the ledger instead, so nothing is skipped.
- Quality gate: judged once per batch, before the commit loop, and only by the records
  themselves (time checks against each record's Kafka timestamp, not the clock), so two
  attempts at the same offsets agree. Quarantine writes replace the batch's offset ranges,
  so a replay rewrites the same verdicts instead of adding rows.
- Group trouble: a group that never finishes a join is left for a fresh member, then the
  sink stops and names the stuck group; `sink.assignment=static` needs no group at all.
- Broker gone: the sink drops its uncommitted batch, reconnects with backoff for up to
  `sink.reconnect_timeout_s`, and resumes from the ledger.
Records are decoded a poll at a time into the table's Arrow columns (streams/decode.py
`decode_rows`: the same verdicts as the strict per-record model, at a fraction of the cost),
and a batch is committed exactly when it reaches `batch_rows` rows, as record by record.
Kafka group offsets are committed too, only as a courtesy for lag monitoring: a refused
courtesy commit is logged, never fatal.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_random_exponential,
)

from infra.catalog import ensure_namespace, ensure_table, open_catalog
from infra.config import Settings
from infra.kafka_io import consumer, producer
from schemas.base import Event
from streams.arrow_rows import with_sink_columns
from streams.decode import DeadLetterWriter, Decoder
from streams.dedupe import KeyIndex
from streams.dlq import DeadLetter
from streams.offsets import append_with_offsets, committed_offsets
from streams.sink_metrics import SinkMetrics

if TYPE_CHECKING:
    from quality.gate import QualityGate

log = logging.getLogger(__name__)

# Errors that mean "the broker is not reachable now", not "this record is bad".
_BROKER_ERRORS = (KafkaError, ConnectionError, TimeoutError)


def _take(rows: pa.Table, indices: np.ndarray) -> pa.Table:
    """`rows.take(indices)` for ascending unique indices; no copy when they are all rows."""
    return rows if len(indices) == rows.num_rows else rows.take(pa.array(indices))


def sink_group_id(table_name: str) -> str:
    """The consumer group of the sinks of `table_name` (unless `--group` names another); the
    Kubernetes autoscaler reads its lag (freshlabel/deploy/render.py)."""
    return f"freshlabel-sink-{table_name}"


class SinkError(RuntimeError):
    """The sink cannot go on; the message names the cause and what to do."""


@dataclass
class SinkStats:
    # Records whose fate is settled: each is exactly one of the five counts below.
    records_consumed: int = 0
    rows_committed: int = 0
    # Rows a critical data-quality check sent to `<table>_quarantine` (quality/gate.py).
    rows_quarantined: int = 0
    dead_letters: int = 0
    # Same event key as a row already in the table (or earlier in the batch): kept once.
    duplicates_dropped: int = 0
    # Already committed by another writer (a rebalance, a zombie, an overlapping worker).
    skipped_already_committed: int = 0
    commits: int = 0
    commit_conflicts: int = 0
    # Times the broker went away and the sink reconnected; fresh group joins.
    reconnects: int = 0
    rejoins: int = 0
    # The group never finished a join and this process reads every partition statically.
    static_fallback: bool = False
    dead_letters_by_reason: dict[str, int] = field(default_factory=dict)


@dataclass
class _Batch:
    # Accepted rows, chunk by chunk in the order read: the model columns (Arrow, the
    # table's types) and, per row, its Kafka partition, offset and record timestamp (ms,
    # the quality gate's reference time).
    chunks: list[pa.RecordBatch] = field(default_factory=list)
    partitions: list[np.ndarray] = field(default_factory=list)
    offsets: list[np.ndarray] = field(default_factory=list)
    timestamps: list[np.ndarray] = field(default_factory=list)
    rows: int = 0
    # Per partition: where this batch's reading started (the ledger offset it must match)
    # and the next offset after the last record taken.
    start_offsets: dict[int, int] = field(default_factory=dict)
    next_offsets: dict[int, int] = field(default_factory=dict)
    # Refused records, sent to the DLQ at commit time for offsets the ledger has not passed.
    letters: list[DeadLetter] = field(default_factory=list)
    letters_sent: set[tuple[int, int]] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return self.rows

    def add(
        self,
        rows: pa.RecordBatch,
        partitions: np.ndarray,
        offsets: np.ndarray,
        timestamps: np.ndarray,
    ) -> None:
        if rows.num_rows:
            self.chunks.append(rows)
            self.partitions.append(partitions)
            self.offsets.append(offsets)
            self.timestamps.append(timestamps)
            self.rows += rows.num_rows

    def saw(self, partition: int, offset: int, start: int) -> None:
        self.start_offsets.setdefault(partition, start)
        self.next_offsets[partition] = max(self.next_offsets.get(partition, 0), offset + 1)

    def columns(self, schema: pa.Schema) -> tuple[pa.Table, np.ndarray, np.ndarray, np.ndarray]:
        """All rows (model columns of `schema`), partitions, offsets and timestamps."""
        rows = pa.Table.from_batches(self.chunks, schema=schema)

        def joined(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts) if parts else np.empty(0, np.int64)

        return rows, joined(self.partitions), joined(self.offsets), joined(self.timestamps)

    def drop_partitions(self, partitions: set[int]) -> None:
        kept = _Batch(letters_sent=self.letters_sent, started=self.started)
        for rows, parts, offsets, stamps in zip(
            self.chunks, self.partitions, self.offsets, self.timestamps, strict=True
        ):
            keep = np.flatnonzero(~np.isin(parts, list(partitions)))
            if len(keep) == len(parts):
                kept.add(rows, parts, offsets, stamps)
            elif len(keep):
                kept.add(rows.take(pa.array(keep)), parts[keep], offsets[keep], stamps[keep])
        self.chunks, self.partitions = kept.chunks, kept.partitions
        self.offsets, self.timestamps, self.rows = kept.offsets, kept.timestamps, kept.rows
        for p in partitions:
            self.next_offsets.pop(p, None)
            self.start_offsets.pop(p, None)
        self.letters = [d for d in self.letters if d.partition not in partitions]


class _SeekToTable(ConsumerRebalanceListener):
    def __init__(self, sink: IcebergSink) -> None:
        self.sink = sink

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        # Another process may own these now; it re-reads them from the table's offsets.
        self.sink.batch.drop_partitions({tp.partition for tp in revoked})
        # A rebalance starts: it must end in an assignment within the join timeout.
        self.sink.joined = False
        self.sink.join_deadline = time.monotonic() + self.sink.cfg.join_timeout_s

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # Called on every completed join, also with no partitions (more sinks than them).
        self.sink.joined = True
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
        self.group_id = group_id or sink_group_id(table_name)
        cfg = self.cfg = settings.sink
        self.batch_rows = batch_rows or cfg.batch_rows
        self.batch_seconds = batch_seconds if batch_seconds is not None else cfg.batch_seconds
        self.decoder: Decoder[Event] = Decoder(topic, settings.decode, self.group_id)
        model = self.decoder.model
        catalog = open_catalog(settings)
        ensure_namespace(catalog, settings.catalog.namespace)
        self.table: Table = ensure_table(
            catalog, settings.catalog.namespace, table_name, schema_of=model.table
        )
        # Whole polls decode at once into the table's Arrow columns (streams/fast_decode.py).
        self.decoder.use_columns(self.table.schema().as_arrow(), cfg.fast_decode)
        self.table_name = table_name
        self.dedupe = KeyIndex.for_model(model, cfg.dedupe_horizon_days, cfg.dedupe_max_bytes)
        self.gate: QualityGate | None = None
        if settings.quality.enabled:
            from quality.gate import QualityGate  # pandas and GX load only when enabled

            self.gate = QualityGate(settings, catalog)
        self.metrics = SinkMetrics(settings, table_name, model.lag_field)
        self.batch = _Batch()
        self.stats = SinkStats()
        # Next offset to read per partition, as this process knows it: the ledger offset
        # it sought to (0 when it read from the log's start), then each record's next one.
        self.positions: dict[int, int] = {}
        # (group|static, workers, worker index): the settings', until a stuck group makes
        # this process read every partition statically (sink.on_stuck_group).
        self.assignment = (cfg.assignment, cfg.workers, cfg.worker_index)
        self.joined = False
        self.join_deadline = float("inf")
        # Idle time counts from the group assignment (a join takes seconds), not from start.
        self.last_activity = float("inf")
        self._last_commit = 0.0  # monotonic time of the last commit
        self._consumer: KafkaConsumer | None = None
        self._dead_letters: DeadLetterWriter | None = None
        self._heap_frozen = False

    # Connections -------------------------------------------------------------------------

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            raise SinkError(f"sink for {self.topic}: not connected; call run()")
        return self._consumer

    @property
    def dead_letters(self) -> DeadLetterWriter:
        if self._dead_letters is None:
            self._dead_letters = DeadLetterWriter(
                producer(self.settings), self.settings.decode.max_dead_letter_bytes
            )
        return self._dead_letters

    def _connect(self) -> None:
        """A new consumer (a fresh group member), subscribed or statically assigned."""
        self._disconnect()
        self.joined = False
        self.join_deadline = time.monotonic() + self.cfg.join_timeout_s
        self.last_activity = float("inf")
        self.batch = _Batch()
        self._consumer = consumer(self.settings, self.group_id)
        assignment, workers, index = self.assignment
        if assignment == "group":
            self._consumer.subscribe([self.topic], listener=_SeekToTable(self))
            return
        partitions = self._consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise SinkError(
                f"sink for {self.topic}: the broker at {self.settings.broker.bootstrap} knows "
                "no such topic; create it (`freshlabel up` creates the platform's topics)"
            )
        mine = {TopicPartition(self.topic, p) for p in sorted(partitions) if p % workers == index}
        self._consumer.assign(list(mine))
        self.joined = True
        self.seek_to_table(mine)
        self.last_activity = time.monotonic()

    def _disconnect(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as exc:  # a dead broker: nothing to tell it
                log.debug("closing the consumer: %s", exc)
            self._consumer = None
        if self._dead_letters is not None:
            try:
                self._dead_letters.producer.close(timeout=5)
            except Exception as exc:
                log.debug("closing the dead-letter producer: %s", exc)
            self._dead_letters = None

    def seek_to_table(self, partitions: set[TopicPartition]) -> None:
        self.table = self.table.refresh()
        if self.dedupe is not None:
            self.dedupe.refresh(self.table)
        offsets = committed_offsets(self.table, self.topic)
        for tp in partitions:
            self._seek(tp.partition, offsets)

    def _seek(self, partition: int, offsets: dict[int, int]) -> None:
        tp = TopicPartition(self.topic, partition)
        if partition in offsets:
            self.consumer.seek(tp, offsets[partition])
            self.positions[partition] = offsets[partition]
        else:
            self.consumer.seek_to_beginning(tp)
            self.positions[partition] = 0

    # The loop --------------------------------------------------------------------------

    def run(
        self,
        idle_timeout_s: float | None = None,
        max_rows: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> SinkStats:
        """Consume until idle for `idle_timeout_s`, `max_rows` committed, or `should_stop()`.

        Args:
            idle_timeout_s: Stop after this many seconds without records (None: never).
            max_rows: Stop once this many rows are committed.
            should_stop: Polled between steps; True ends the run after a final commit.

        Returns:
            The counts of this run.

        Raises:
            SinkError: The broker stayed away past `sink.reconnect_timeout_s`, or the group
                never assigned partitions; the message names the cause.
        """
        try:
            for attempt in self._reconnecting(should_stop):
                with attempt:
                    self._connect()
                    self._consume(idle_timeout_s, max_rows, should_stop)
        except BaseException as exc:
            self.metrics.ready(False, "stopped on an error")
            self._disconnect()
            self._close_gate()
            self.metrics.write_status(error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            raise
        self.metrics.ready(False, "stopped")
        self._disconnect()
        self._close_gate()
        self.metrics.write_status(stopped=True)
        self.stats.dead_letters_by_reason = self.decoder.counters.by_reason()
        return self.stats

    def _reconnecting(self, should_stop: Callable[[], bool]) -> Retrying:
        """The policy of `run` against broker trouble: each failed session drops its
        uncommitted batch and reconnects after a doubling delay (1 s up to 10 s, counted
        over the run's reconnects). An outage starts at the first failure after a commit;
        past `sink.reconnect_timeout_s` it raises SinkError. A stop request during the
        trouble ends the run quietly: the next run reads the uncommitted batch again from
        the ledger."""
        outage_since = 0.0
        stopping = False
        bootstrap = self.settings.broker.bootstrap

        def give_up(state: RetryCallState) -> bool:
            nonlocal outage_since, stopping
            exc = state.outcome.exception() if state.outcome else None
            now = time.monotonic()
            if state.attempt_number == 1 or self._last_commit > outage_since:
                outage_since = now  # a new outage: the last session made progress
            if should_stop():
                log.warning("sink for %s: stopping during broker trouble (%r)", self.topic, exc)
                stopping = True
                return True
            self.metrics.tick()
            self.metrics.ready(False, f"broker {bootstrap} unreachable ({exc!r})")
            return now - outage_since > self.cfg.reconnect_timeout_s

        def backoff(state: RetryCallState) -> float:
            return min(10.0, 0.5 * 2 ** min(self.stats.reconnects + 1, 5))

        def reconnect(state: RetryCallState) -> None:
            self.stats.reconnects += 1
            log.warning(
                "sink for %s: broker trouble (%r); uncommitted batch dropped, "
                "reconnecting in %.1f s",
                self.topic,
                state.outcome.exception() if state.outcome else None,
                state.next_action.sleep if state.next_action else 0.0,
            )
            self._disconnect()

        def gave_up(state: RetryCallState) -> None:
            if stopping:
                return
            exc = state.outcome.exception() if state.outcome else None
            raise SinkError(
                f"sink for {self.topic}: broker at {bootstrap} unreachable for "
                f"{time.monotonic() - outage_since:.0f} s ({exc!r}); start it, or raise "
                "sink.reconnect_timeout_s"
            ) from exc

        return Retrying(
            retry=retry_if_exception_type(_BROKER_ERRORS),
            stop=give_up,
            wait=backoff,
            before_sleep=reconnect,
            retry_error_callback=gave_up,
        )

    def _close_gate(self) -> None:
        if self.gate is not None:
            self.gate.close()

    def _consume(
        self,
        idle_timeout_s: float | None,
        max_rows: int | None,
        should_stop: Callable[[], bool],
    ) -> None:
        rejoins = 0
        while not should_stop():
            polled = self.consumer.poll(timeout_ms=500)
            if polled:
                # Every partition's records at once, in the order they were handed over.
                self._take_many([r for records in polled.values() for r in records])
            if polled:
                self.last_activity = time.monotonic()
            self._report_health()
            if self._batch_due():
                self.commit()
            if max_rows is not None and self.stats.rows_committed >= max_rows:
                break
            now = time.monotonic()
            if idle_timeout_s is not None and now - self.last_activity > idle_timeout_s:
                break
            if not self.joined and now > self.join_deadline:
                rejoins += 1
                self._stuck_group(rejoins)
                self.stats.rejoins += 1
                self._connect()
            elif self.joined:
                rejoins = 0
        self.commit()

    def _report_health(self) -> None:
        """Liveness, readiness and consumer lag for the metrics endpoint, once a loop turn."""
        self.metrics.health.loop_turned(self.consumer, self.group_id, self.topic, self.joined)
        self.metrics.observe_lag(self.consumer, self.group_id)

    def _stuck_group(self, rejoins: int) -> None:
        """The group has not completed a join: after `join_attempts` fresh members, read
        every partition without the group (`sink.on_stuck_group=static`) or stop."""
        waited = self.cfg.join_timeout_s * rejoins
        partitions = self.consumer.partitions_for_topic(self.topic)
        if partitions is None:
            raise ConnectionError(f"no metadata for {self.topic} after {waited:.0f} s")
        log.warning(
            "sink for %s: group %s has not assigned partitions in %.0f s; rejoining as a "
            "fresh member (%d of %d)",
            self.topic,
            self.group_id,
            self.cfg.join_timeout_s,
            rejoins,
            self.cfg.join_attempts,
        )
        if rejoins >= self.cfg.join_attempts and self.cfg.on_stuck_group == "static":
            # Safe without coordination: the ledger keeps overlapping writers exactly once.
            log.error(
                "sink for %s: consumer group %s is stuck rebalancing (no join completed in "
                "%.0f s over %d fresh members) while the broker at %s answers metadata; "
                "reading all %d partitions without the group from now on "
                "(sink.on_stuck_group=static)",
                self.topic,
                self.group_id,
                waited,
                rejoins,
                self.settings.broker.bootstrap,
                len(partitions),
            )
            self.assignment = ("static", 1, 0)
            self.stats.static_fallback = True
        elif rejoins >= self.cfg.join_attempts:
            raise SinkError(
                f"sink for {self.topic}: consumer group {self.group_id} is stuck rebalancing "
                f"(no join completed in {waited:.0f} s over {rejoins} fresh members) while "
                f"the broker at {self.settings.broker.bootstrap} answers metadata "
                f"({len(partitions)} partitions); run sinks with sink.assignment=static "
                "(--workers N --worker-index I), or a new --group"
            )

    def _take_many(self, records: Sequence[Any]) -> None:
        """Decode records (in offset order per partition) into the batch, committing
        whenever it reaches `batch_rows` rows: the same commits as one record at a time."""
        done = 0
        while done < len(records):
            # Each record adds at most one row: this many cannot overshoot the batch.
            room = max(1, self.batch_rows - len(self.batch))
            chunk = records[done : done + room]
            done += len(chunk)
            self._decode_chunk(chunk)
            if len(self.batch) >= self.batch_rows:
                self.commit()

    def _decode_chunk(self, records: Sequence[Any]) -> None:
        partitions = np.fromiter((r.partition for r in records), np.int64, len(records))
        offsets = np.fromiter((r.offset for r in records), np.int64, len(records))
        decoded = self.decoder.decode_rows(
            [r.value for r in records], partitions, offsets, [r.key for r in records]
        )
        index = decoded.index
        stamps = np.fromiter((r.timestamp or 0 for r in records), np.int64, len(records))
        self.batch.add(decoded.rows, partitions[index], offsets[index], stamps[index])
        self.batch.letters.extend(decoded.letters)
        # As record by record: a partition's batch starts where this process stood before
        # its first record (or at that record), and it is read up to its last one.
        for partition in np.unique(partitions).tolist():
            mine = offsets[partitions == partition]
            first, last = int(mine[0]), int(mine[-1])
            start = self.positions.get(partition, first)
            self.positions[partition] = last + 1
            self.batch.saw(partition, int(mine.max()), start)

    def _batch_due(self) -> bool:
        if not self.batch.next_offsets:
            return False
        return (
            len(self.batch) >= self.batch_rows
            or time.monotonic() - self.batch.started >= self.batch_seconds
        )

    # Committing ------------------------------------------------------------------------

    def commit(self) -> None:
        """Settle the current batch: gate once, then commit it exactly once."""
        batch, self.batch = self.batch, _Batch()
        if not batch.next_offsets:
            return
        ingested_at = datetime.now(UTC)
        first = min(batch.start_offsets.values())
        batch_id = f"{self.topic}@{first}-{max(batch.next_offsets.values())}/{time.time_ns()}"
        schema = self.table.schema().as_arrow()
        model_rows, partitions, offsets, timestamps = batch.columns(self.decoder.columns)
        rows = with_sink_columns(schema, model_rows, partitions, offsets, batch_id, ingested_at)
        quarantined = self._judge(rows, timestamps, batch_id, ingested_at)

        def conflict(state: RetryCallState) -> None:
            self.metrics.tick()  # retrying is progress, not a wedged loop
            self.stats.commit_conflicts += 1
            self.metrics.conflicts.inc()
            log.warning(
                "commit conflict on %s, retrying (%d)", self.table_name, state.attempt_number
            )

        try:
            for attempt in Retrying(
                retry=retry_if_exception_type(CommitFailedException),
                stop=stop_after_attempt(self.cfg.commit_attempts),
                wait=wait_random_exponential(multiplier=0.05, max=2.0),
                before_sleep=conflict,
                reraise=True,
            ):
                with attempt:
                    self._commit_once(batch, rows, partitions, offsets, quarantined)
        except Exception as exc:
            self.metrics.commit_failed(exc)
            raise
        self._courtesy_commit(batch)
        if not self._heap_frozen:
            # The first batch has loaded what lives as long as the process (the gate's
            # Great Expectations above all: ~300k objects). Frozen, the cyclic collector
            # stops rescanning them on every collection the next batches trigger, which
            # halved the gate's CPU per row; short-lived rows are collected as before.
            gc.collect()
            gc.freeze()
            self._heap_frozen = True

    def _judge(
        self, rows: pa.Table, timestamps: np.ndarray, batch_id: str, ingested_at: datetime
    ) -> np.ndarray:
        """Quarantine mask of the batch's rows; quarantined rows are written (idempotently,
        by offset range) and alerts raised, once per batch."""
        none = np.zeros(rows.num_rows, dtype=bool)
        if self.gate is None or not self.gate.applies_to(self.table_name) or not rows.num_rows:
            return none
        # Time checks measure against each record's Kafka timestamp, so every attempt at
        # these offsets, by any writer, reaches the same verdict.
        fallback = int(ingested_at.timestamp() * 1000)
        reference = (
            pa.array(np.where(timestamps > 0, timestamps, fallback), pa.int64())
            .cast(pa.timestamp("ms"))
            .cast(rows.schema.field("_ingested_at").type)
        )
        index = rows.schema.get_field_index("_ingested_at")
        judged = rows.set_column(index, rows.schema.field(index), reference)
        outcome = self.gate.check(self.table_name, judged, batch_id)
        mask = none.copy()
        mask[outcome.quarantined_indices] = True
        if outcome.quarantined.num_rows:
            outcome.quarantined = outcome.quarantined.set_column(
                index,
                rows.schema.field(index),
                pa.array(
                    [ingested_at] * outcome.quarantined.num_rows, rows.schema.field(index).type
                ),
            )
        if outcome.results:
            # Alerts first: a restarted gate takes a check failing in dq_results as already
            # alerted, so a crash between the two may repeat an alert but never lose one.
            self.gate.publish(outcome)
            self.gate.persist(outcome)
        return mask

    def _commit_once(
        self,
        batch: _Batch,
        rows: pa.Table,
        partitions: np.ndarray,
        offsets: np.ndarray,
        quarantined: np.ndarray,
    ) -> None:
        table = self.table = self.table.refresh()
        done = committed_offsets(table, self.topic)
        behind = {p for p, start in batch.start_offsets.items() if start > done.get(p, 0)}
        for p in behind:
            # The ledger is behind where this batch started (a rollback): re-read from it.
            log.warning(
                "%s: ledger of %s[%d] is at %d, before this batch's start %d; re-reading",
                self.table_name,
                self.topic,
                p,
                done.get(p, 0),
                batch.start_offsets[p],
            )
            if self._consumer is not None and TopicPartition(self.topic, p) in (
                self._consumer.assignment()
            ):
                self._seek(p, done)
        floor = np.zeros(len(partitions), dtype=np.int64)
        for p in np.unique(partitions).tolist():
            floor[partitions == p] = done.get(p, 0)
        live = ~np.isin(partitions, list(behind)) if behind else np.ones(len(partitions), bool)
        fresh = live & (offsets >= floor)
        letters = [
            d
            for d in batch.letters
            if d.partition not in behind and d.offset >= done.get(d.partition, 0)
        ]
        # Dead letters go out only now, for offsets no writer has settled, and must be
        # acknowledged before the ledger records them as done (a crash in between sends
        # them again: the DLQ is at-least-once, keyed by source topic/partition/offset).
        for letter in letters:
            if (letter.partition, letter.offset) not in batch.letters_sent:
                self.dead_letters.send(letter)
                batch.letters_sent.add((letter.partition, letter.offset))
                self.metrics.dead_letters.inc()
        if letters:
            self.dead_letters.flush()
        keep = np.flatnonzero(fresh & ~quarantined)
        keys: tuple[np.ndarray, np.ndarray] | None = None
        if self.dedupe is not None and keep.size:
            candidates = _take(rows, keep)
            digests, days = self.dedupe.keys_and_days(candidates)
            new = np.asarray(self.dedupe.new_indices(table, candidates, (digests, days)), np.int64)
            duplicates = keep.size - len(new)
            keep, keys = keep[new], (digests[new], days[new])
        else:
            duplicates = 0
        merged = dict(done)
        for partition, offset in batch.next_offsets.items():
            if partition not in behind:
                merged[partition] = max(merged.get(partition, 0), offset)
        written = _take(rows, keep)
        if merged != done:
            self.table = append_with_offsets(table, written, self.topic, merged)
            self._last_commit = time.monotonic()
            self.stats.commits += 1
        if self.dedupe is not None and written.num_rows:
            self.dedupe.remember(written, self.table, keys)
        # Every record of the settled partitions, counted once by its fate.
        live_letters = sum(1 for d in batch.letters if d.partition not in behind)
        stats = self.stats
        stats.records_consumed += int(live.sum()) + live_letters
        stats.rows_committed += written.num_rows
        stats.rows_quarantined += int((fresh & quarantined).sum())
        stats.dead_letters += len(letters)
        stats.duplicates_dropped += duplicates
        stats.skipped_already_committed += int((live & ~fresh).sum()) + live_letters - len(letters)
        self.metrics.counts = asdict(stats)
        if merged != done:
            self.metrics.record_commit(written, time.time(), int((fresh & quarantined).sum()))

    def _courtesy_commit(self, batch: _Batch) -> None:
        """Group offsets for lag monitoring only; the ledger is the truth."""
        if self._consumer is None:
            return
        try:
            self._consumer.commit(
                {
                    TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1)
                    for p, o in batch.next_offsets.items()
                }
            )
        except KafkaError as exc:
            log.info("courtesy offset commit refused (%r); the Iceberg ledger is unaffected", exc)
