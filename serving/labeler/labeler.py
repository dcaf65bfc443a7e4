"""`freshlabel label run`: every enriched impression gets a teacher label, or a dead letter.

One loop, in order, per poll of `impressions.enriched`:
  decode (bad rows -> DLQ) -> build the teacher input with the training-time text builder
  -> cache lookup under the version Triton serves now -> score the misses on Triton
  -> `RelevanceLabel`s to the `labels` topic, acknowledged -> commit the consumer offsets.

The guarantee: every record of `impressions.enriched` ends as a label (of a known teacher
version) or as a dead letter with its reason; an offset is committed only once every record
before it is one of the two, acknowledged by the broker. Repeats are allowed (a crash, a
rebalance mid-batch, an offset commit refused) and harmless: the labels sink keeps one row per
(impression_id, teacher_version), deduplicated by the impression's time.

How each fault keeps that promise:
- Teacher outage: every assigned partition is paused on every wait step, partitions assigned
  by a rebalance during the outage are paused as they arrive (rebalance listener), and a poll
  that returns records anyway is rewound (`seek`) to the first of them, so nothing fetched is
  ever dropped. Partitions new to this member start at the group's committed offset.
- Rebalance mid-batch: offsets are committed only for partitions still assigned; a refused
  commit (`CommitFailedError`, `RebalanceInProgressError`, any `KafkaError`) is logged, and
  the new owner relabels from the last committed offset.
- A row the teacher refuses for good (not an outage): the batch is bisected until the rows
  that fail alone are found; each goes to `impressions.enriched.dlq` with reason
  `scoring_failed`, but only if a known-good canary pair still scores (a teacher that fails
  everything is an outage, not a bad row).
- A version Triton serves without its `teacher_version.<N>` parameter (a half-written
  export) counts as unavailable: no label ever says `unknown`.
- A teacher slower than the stream (backpressure, not collapse): the loop takes the next
  poll only when the last one is published and committed, so the unlabeled rows stay in
  Kafka, where the consumer lag (`freshlabel_consumer_lag_records`, `backlog` in the status
  file) grows, refreshed after every poll and once a second while waiting on the teacher.
  Memory is bounded whatever the lag: at most `labeler.batch_rows` records in hand (the
  poll's `max_poll_records`) plus kafka-python's one buffered fetch per partition (at most
  `labeler.fetch_partition_bytes` each on Kafka; the embedded Tansu broker can return
  more), at most
  `labeler.score_chunk_rows` pairs per teacher call and `labeler.max_in_flight` requests of
  `labeler.request_rows` pairs on the wire. Nothing is dropped: rows not yet labeled are
  simply not committed. When the teacher speeds up (or another labeler joins the group and
  takes partitions) the lag drains.
- Fresh traffic first: requests carry `labeler.live_priority` (1), which Triton's dynamic
  batcher dequeues before a backfill's `labeler.backfill_priority` (2).
- Broker death: connecting, publishing and committing retry with backoff (tenacity) for
  `labeler.broker_wait_s`; a group that never assigns partitions (the embedded broker can
  wedge a group in an endless rebalance) is rejoined with a fresh member, and after
  `labeler.rejoins` tries the labeler stops with an error naming the group and the broker.

With `labeler.student_dir` set, the teacher is also asked for its embeddings and every
published batch is compared with that student's labels, per language and query family
(serving/labeler/drift.py): monitoring only, it never holds, changes or fails a label.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import numpy as np
from kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    KafkaProducer,
    OffsetAndMetadata,
    TopicPartition,
)
from kafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pydantic import BaseModel, ConfigDict, ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from infra.config import Settings
from infra.kafka_io import consumer, producer
from schemas import EnrichedImpression, RelevanceLabel
from schemas.topics import dlq_topic
from serving.labeler.cache import CachedScore, ScoreCache, cache_key, input_hash
from serving.labeler.drift import DriftMonitor
from serving.labeler.metrics import LabelerMetrics
from serving.teacher.text import build_pin_text
from streams.decode import Decoder
from streams.dlq import DeadLetter, Reason

log = logging.getLogger(__name__)

SOURCE_TOPIC = "impressions.enriched"
LABELS_TOPIC = "labels"
# Teacher versions that name no trained teacher: a label never carries one.
UNKNOWN_VERSIONS = frozenset({"", "unknown"})
# Scored when one row fails alone: if this fails too, the teacher is broken, not the row.
CANARY = ("oak desk", "title: modern oak desk")
# What kafka-python raises while the broker does not answer (bootstrap, requests).
BROKER_AWAY = (KafkaTimeoutError, KafkaConnectionError)

T = TypeVar("T")


class ScoredPair(BaseModel):
    """The teacher's answer for one pair (`Scorer.score`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    probs: list[float]
    score: float
    teacher_version: str
    label_scale: int
    # With `score(..., embeddings=True)` from a teacher that serves them: its bi-encoder
    # embeddings (float32, (d,)) of the query and of the pin text (the student's inputs).
    query_embedding: np.ndarray | None = None
    pin_embedding: np.ndarray | None = None


class ScorerUnavailable(RuntimeError):
    """The teacher cannot be reached now; the labeler waits and retries the same rows."""


class ScoringFailed(RuntimeError):
    """The teacher refused these inputs for good (not an outage); the rows are isolated and
    dead-lettered with reason `scoring_failed`."""


class LabelerError(RuntimeError):
    """The labeler cannot go on; the message names the cause and the remedy."""


class _Stopping(Exception):
    """A stop was requested while waiting for the teacher: leave without committing."""


class Scorer(Protocol):
    async def served(self) -> tuple[str, int]:
        """(teacher version, label scale) the server would use for a request now."""
        ...

    async def score(self, queries: Sequence[str], pin_texts: Sequence[str]) -> list[ScoredPair]:
        """One result per pair, each with the version that actually produced it.

        The labeler passes `embeddings=True` only when a student is configured (drift
        monitoring): a scorer that can then returns each pair's embeddings too."""
        ...


def teacher_input(row: EnrichedImpression) -> str:
    return build_pin_text(
        title=row.title,
        description=row.description,
        caption=row.caption,
        board_titles=row.board_titles,
        top_queries=row.top_queries,
        link_title=row.link_title,
    )


def _classify(exc: BaseException) -> BaseException:
    """Map a teacher client error raised through the Scorer protocol to the labeler's two
    kinds: `ScorerUnavailable` (wait) or `ScoringFailed` (isolate and dead-letter)."""
    from serving.client import TeacherClientError, TeacherUnavailable, TeacherVersionMissing

    if isinstance(exc, TeacherUnavailable | TeacherVersionMissing):
        return ScorerUnavailable(str(exc))
    if isinstance(exc, TeacherClientError):
        return ScoringFailed(str(exc))
    if isinstance(exc, ValidationError):
        # The teacher answered, but not a label the labels topic accepts (NaN or infinite
        # probabilities, an empty version): refused for good, like a client error.
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "(label)"
        return ScoringFailed(f"the teacher's answer is not a valid label: {where}: {first['msg']}")
    return exc


@dataclass
class LabelerStats:
    rows: int = 0
    labels: int = 0
    dead_letters: int = 0
    scoring_failed: int = 0
    cache_hits: int = 0
    scored: int = 0
    scorer_outages: int = 0
    rejoins: int = 0
    commits_refused: int = 0
    versions: dict[str, int] = field(default_factory=dict)


class LabelMaker:
    """Rows -> labels: teacher input, cache lookup under the served version, score misses."""

    def __init__(
        self,
        scorer: Scorer,
        cache: ScoreCache,
        metrics: LabelerMetrics,
        chunk_rows: int = 256,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        drift: DriftMonitor | None = None,
    ) -> None:
        self.scorer = scorer
        self.drift = drift
        self.chunk_rows = chunk_rows
        self.cache = cache
        self.metrics = metrics
        self.clock = clock
        self.cache_hits = 0
        self.scored = 0

    async def labels_for(self, rows: list[EnrichedImpression]) -> list[RelevanceLabel]:
        """Labels for `rows`, in order.

        Raises:
            ScorerUnavailable: the teacher is unreachable or serves a version it cannot name.
            ScoringFailed: the teacher refused one of the chunks for good.
        """
        try:
            return await self._labels_for(rows)
        except (ScorerUnavailable, ScoringFailed):
            raise
        except Exception as exc:
            mapped = _classify(exc)
            if mapped is exc:
                raise
            raise mapped from exc

    async def _labels_for(self, rows: list[EnrichedImpression]) -> list[RelevanceLabel]:
        version, _ = await self.scorer.served()
        if version in UNKNOWN_VERSIONS:
            raise ScorerUnavailable(f"the served teacher has no version name ({version!r})")
        texts = [teacher_input(r) for r in rows]
        hashes = [input_hash(r.query, t) for r, t in zip(rows, texts, strict=True)]
        keys = [cache_key(r.query, r.pin_id, h, version) for r, h in zip(rows, hashes, strict=True)]
        found = self.cache.get_many(keys)
        hits = sum(1 for k in keys if k in found)
        # Score each distinct miss once.
        missing = {k: i for i, k in enumerate(keys) if k not in found}
        scored: dict[int, ScoredPair] = {}
        order = list(missing.values())
        # The student's inputs come with the teacher's answer (drift monitoring).
        extra = (
            {"embeddings": True}
            if self.drift is not None and self.drift.wants_embeddings(version)
            else {}
        )
        for start in range(0, len(order), self.chunk_rows):
            chunk = order[start : start + self.chunk_rows]
            started = time.monotonic()
            chunk_queries = [rows[i].query for i in chunk]
            chunk_texts = [texts[i] for i in chunk]
            results = await self.scorer.score(chunk_queries, chunk_texts, **extra)
            self.metrics.observe_teacher(time.monotonic() - started, len(chunk))
            unnamed = {r.teacher_version for r in results} & UNKNOWN_VERSIONS
            if unnamed:
                # A version directory Triton loaded before its config named it: wait.
                raise ScorerUnavailable(
                    "Triton answered with a model version that has no teacher_version "
                    "parameter (an export in progress?); waiting for the repository to settle"
                )
            done = dict(zip(chunk, results, strict=True))
            scored.update(done)
            if extra and self.drift is not None:
                self.drift.predict(
                    [
                        cache_key(rows[i].query, rows[i].pin_id, hashes[i], r.teacher_version)
                        for i, r in done.items()
                    ],
                    chunk_queries,
                    chunk_texts,
                    results,
                )
            # Cached at once: if a later chunk fails, the retry starts from here.
            self.cache.put_many(
                (
                    cache_key(rows[i].query, rows[i].pin_id, hashes[i], r.teacher_version),
                    CachedScore(probs=r.probs, score=r.score, label_scale=r.label_scale),
                )
                for i, r in done.items()
            )
        # Counted once the whole batch is labeled (a retried batch is not counted twice).
        self.cache_hits += hits
        self.scored += len(order)
        now = self.clock()
        labels = []
        for i, (row, key) in enumerate(zip(rows, keys, strict=True)):
            if key in found:
                hit = found[key]
                probs, score, used_version, used_scale = (
                    hit.probs,
                    hit.score,
                    version,
                    hit.label_scale,
                )
            else:
                pair = scored[missing[key]]
                probs, score = pair.probs, pair.score
                used_version, used_scale = pair.teacher_version, pair.label_scale
            labels.append(
                RelevanceLabel(
                    impression_id=row.impression_id,
                    query=row.query,
                    pin_id=row.pin_id,
                    teacher_version=used_version,
                    label_scale=used_scale,
                    probs=probs,
                    score=score,
                    labeled_at=now,
                    input_hash=hashes[i],
                    impression_time=row.event_time,
                )
            )
        return labels


class _Membership(ConsumerRebalanceListener):
    """Tracks the group: whether this member has an assignment, and pauses partitions that
    arrive while the labeler is holding (a teacher outage)."""

    def __init__(self) -> None:
        self.consumer: KafkaConsumer | None = None
        self.holding = False
        self.joined = False  # an assignment (possibly empty) was received at least once
        self.assigned = False  # the last rebalance completed
        self.unassigned_s = 0.0  # time polled since the last completed rebalance

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned = False

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.joined = self.assigned = True
        self.unassigned_s = 0.0
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))
        if self.holding and assigned and self.consumer is not None:
            # Not one record of these may be fetched until the teacher is back.
            self.consumer.pause(*assigned)


class Labeler:
    def __init__(
        self,
        settings: Settings,
        scorer: Scorer,
        metrics: LabelerMetrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.settings = settings
        self.cfg = settings.labeler
        self.scorer = scorer
        self.cache = ScoreCache.in_state_dir(settings.state_dir, self.cfg.cache_memory_items)
        self.decoder: Decoder[EnrichedImpression] = Decoder(
            SOURCE_TOPIC, settings.decode, self.cfg.group_id
        )
        self.metrics = metrics or LabelerMetrics(settings)
        # Teacher-student disagreement on fresh traffic, with a student configured.
        self.drift = DriftMonitor.from_settings(settings, self.metrics)
        self.maker = LabelMaker(
            scorer, self.cache, self.metrics, self.cfg.score_chunk_rows, clock, self.drift
        )
        self.stats = LabelerStats()
        self.membership = _Membership()
        self.should_stop: Callable[[], bool] = lambda: False
        # Fresh members tried since the last completed assignment; since when the broker
        # has not answered a metadata request (None: it answers).
        self._fresh_members = 0
        self._broker_away_since: float | None = None
        self._reported_at = float("-inf")  # last backlog report while holding
        self._in_hand = 0  # records polled and not labeled yet
        self.producer: KafkaProducer = self._connect(lambda: producer(settings))
        self.consumer: KafkaConsumer = self._subscribe()

    # -- broker and group ------------------------------------------------------------

    def _connect(self, make: Callable[[], T]) -> T:
        """`make()` a client, retrying with backoff while the broker does not answer."""
        bootstrap = self.settings.broker.bootstrap
        retrying = self._broker_retrying(BROKER_AWAY, "not answering; retrying")
        try:
            return retrying(make)
        except BROKER_AWAY as exc:
            raise LabelerError(
                f"broker {bootstrap} did not answer for {self.cfg.broker_wait_s:.0f} s ({exc}); "
                "start it with `freshlabel up` or fix FRESHLABEL_BROKER__PORT"
            ) from exc

    def _subscribe(self) -> KafkaConsumer:
        self.membership = _Membership()
        made = self._connect(
            lambda: consumer(
                self.settings,
                self.cfg.group_id,
                max_poll_records=self.cfg.batch_rows,
                max_partition_fetch_bytes=self.cfg.fetch_partition_bytes,
            )
        )
        made.subscribe([SOURCE_TOPIC], listener=self.membership)
        self.membership.consumer = made
        return made

    def _broker_retrying(
        self, errors: type[BaseException] | tuple[type[BaseException], ...], doing: str
    ) -> Retrying:
        """Retries on `errors` with backoff while the broker may be away, for up to
        `labeler.broker_wait_s`; each retry logs "broker B <doing>"."""
        return Retrying(
            retry=retry_if_exception_type(errors),
            wait=wait_exponential(multiplier=0.5, max=10),
            stop=stop_after_delay(self.cfg.broker_wait_s),
            before_sleep=lambda state: log.warning(
                "broker %s %s (%s)", self.settings.broker.bootstrap, doing, _error_of(state)
            ),
            reraise=True,
        )

    def _poll(self) -> dict[Any, list[Any]]:
        """One poll; while the broker is away, polls again with backoff for up to
        `labeler.broker_wait_s` (kafka-python reconnects by itself in between)."""
        retrying = self._broker_retrying(BROKER_AWAY, "not answering; polling again")
        try:
            polled: dict[Any, list[Any]] = retrying(self.consumer.poll, timeout_ms=500)
        except BROKER_AWAY as exc:
            raise LabelerError(
                f"broker {self.settings.broker.bootstrap} did not answer for "
                f"{self.cfg.broker_wait_s:.0f} s ({exc}); start it with `freshlabel up`"
            ) from exc
        return polled

    def _check_group(self, polled_s: float) -> None:
        """Count time without an assignment; rejoin as a fresh member when the group does
        not settle, and give up with the cause after `labeler.rejoins` fresh members."""
        if self.membership.assigned:
            self._fresh_members = 0
            self._broker_away_since = None
            return
        self.membership.unassigned_s += polled_s
        if self.membership.unassigned_s < self.cfg.join_timeout_s:
            return
        group, bootstrap = self.cfg.group_id, self.settings.broker.bootstrap
        waited = self.cfg.join_timeout_s * (self._fresh_members + 1)
        try:
            answers = SOURCE_TOPIC in self.consumer.topics()
        except KafkaError as exc:
            # No group without a broker: wait for it (kafka-python reconnects), not longer
            # than `broker_wait_s`.
            now = time.monotonic()
            self._broker_away_since = self._broker_away_since or now
            if now - self._broker_away_since > self.cfg.broker_wait_s:
                raise LabelerError(
                    f"broker {bootstrap} did not answer for {self.cfg.broker_wait_s:.0f} s "
                    f"while group {group!r} was joining ({exc}); start it with `freshlabel up`"
                ) from exc
            log.warning("broker %s not answering (%s); waiting for it", bootstrap, exc)
            self.membership.unassigned_s = 0.0
            return
        self._broker_away_since = None
        if not answers:
            raise LabelerError(
                f"topic {SOURCE_TOPIC} does not exist on broker {bootstrap}; create the "
                "topics with `freshlabel up`"
            )
        if self._fresh_members >= self.cfg.rejoins:
            raise LabelerError(
                f"consumer group {group!r} stuck rebalancing on broker {bootstrap}: the broker "
                f"answers metadata but assigned no partitions of {SOURCE_TOPIC} in {waited:.0f} s "
                f"({self._fresh_members} fresh members tried); restart the broker (`freshlabel "
                "down && freshlabel up --durable`) or set FRESHLABEL_LABELER__GROUP_ID to a new "
                "group (it relabels from the start; the labels sink drops the repeats)"
            )
        self.stats.rejoins += 1
        self._fresh_members += 1
        log.warning(
            "group %r assigned no partitions in %.0f s on broker %s (stuck rebalance?); "
            "rejoining with a fresh member (%d/%d)",
            group,
            self.cfg.join_timeout_s,
            bootstrap,
            self._fresh_members,
            self.cfg.rejoins,
        )
        self.consumer.close(autocommit=False, timeout_ms=10_000)
        self.consumer = self._subscribe()

    # -- the loop ----------------------------------------------------------------------

    async def run(
        self,
        idle_timeout_s: float | None = None,
        max_rows: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> LabelerStats:
        """Label until stopped, idle for `idle_timeout_s` after joining, or `max_rows` done.

        Raises:
            LabelerError: the broker is gone for good or the consumer group never settles.
        """
        self.should_stop = should_stop
        last_rows = time.monotonic()
        error: str | None = None
        try:
            while not should_stop():
                started = time.monotonic()
                polled = self._poll()
                self._check_group(time.monotonic() - started)
                if not self.membership.joined:
                    last_rows = time.monotonic()
                records = [r for batch in polled.values() for r in batch]
                # Right after the poll: its fetch made the high watermarks fresh, so what
                # arrived during the last (maybe long) batch shows in the lag.
                self._in_hand = len(records)
                self.metrics.observe_backlog(self.consumer, self._in_hand)
                if records:
                    try:
                        await self._label(records)
                    except _Stopping:
                        log.warning("stopped while waiting for the teacher; nothing committed")
                        break
                    last_rows = time.monotonic()
                self._in_hand = 0
                self._report_health()
                if max_rows is not None and self.stats.rows >= max_rows:
                    break
                idle = time.monotonic() - last_rows
                if idle_timeout_s is not None and idle > idle_timeout_s:
                    break
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.close(error)
        return self.stats

    def _report_health(self) -> None:
        """Liveness and readiness for the metrics endpoint, once a loop turn."""
        self.metrics.health.loop_turned(
            self.consumer, self.cfg.group_id, SOURCE_TOPIC, self.membership.assigned
        )

    def close(self, error: str | None = None) -> None:
        """Leave the group without committing, and write the final status: stopped, or the
        error that ended the run."""
        self.metrics.ready(False, "stopped" if error is None else "stopped on an error")
        try:
            self.consumer.close(autocommit=False, timeout_ms=10_000)
            self.producer.close(timeout=10)
            self.cache.close()
            if self.drift is not None:
                self.drift.close()
        finally:
            if error is None:
                self.metrics.write_status(stopped=True)
            else:
                self.metrics.write_status(error=" ".join(error.split()))

    async def _label(self, records: list[Any]) -> None:
        rows: list[EnrichedImpression] = []
        sources: list[Any] = []
        letters: list[DeadLetter] = []
        for record in records:
            decoded = self.decoder.decode(record)
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                rows.append(decoded)
                sources.append(record)
        labels, failed = await self._isolating(rows) if rows else ([], [])
        for index, reason in failed:
            record, row = sources[index], rows[index]
            letters.append(
                DeadLetter.of(
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    key=record.key,
                    value=record.value,
                    reason=Reason.SCORING_FAILED,
                    detail=f"the teacher refused impression {row.impression_id!r} for good "
                    f"({reason}); fix the row or the teacher, then replay it from the DLQ",
                    consumer=self.cfg.group_id,
                )
            )
        self._publish(labels, letters)
        self._commit(records)
        if self.drift is not None and labels:
            ranges = _offset_ranges(records)
            self.drift.observe(rows, labels, f"{self.cfg.group_id}@{ranges}", ranges)
        self.stats.rows += len(records)
        self.stats.cache_hits, self.stats.scored = self.maker.cache_hits, self.maker.scored
        self.stats.labels += len(labels)
        self.stats.dead_letters += len(letters)
        self.stats.scoring_failed += len(failed)
        for _ in letters:
            self.metrics.dead_letters.inc()
        for label in labels:
            self.stats.versions[label.teacher_version] = (
                self.stats.versions.get(label.teacher_version, 0) + 1
            )
        self.metrics.record_batch(labels, rows, self.cache.hit_rate)

    async def _isolating(
        self, rows: list[EnrichedImpression], offset: int = 0
    ) -> tuple[list[RelevanceLabel], list[tuple[int, str]]]:
        """Labels for `rows`, bisecting around rows the teacher refuses for good.

        Returns:
            The labels of the rows that scored (in order), and (index, error) of each row
            that fails alone while the canary scores (index counted from `offset`).
        """
        try:
            return await self._with_retries(lambda: self._attempt(rows)), []
        except ScoringFailed as exc:
            if len(rows) == 1:
                log.warning("impression %s refused by the teacher: %s", rows[0].impression_id, exc)
                return [], [(offset, str(exc))]
        mid = len(rows) // 2
        left, left_failed = await self._isolating(rows[:mid], offset)
        right, right_failed = await self._isolating(rows[mid:], offset + mid)
        return left + right, left_failed + right_failed

    async def _attempt(self, rows: list[EnrichedImpression]) -> list[RelevanceLabel]:
        try:
            return await self.maker.labels_for(rows)
        except ScoringFailed as exc:
            if len(rows) == 1 and not await self._canary_scores():
                raise ScorerUnavailable(
                    f"the teacher refuses a known-good pair too ({exc}); treating it as down"
                ) from exc
            raise

    async def _canary_scores(self) -> bool:
        try:
            await self.scorer.score([CANARY[0]], [CANARY[1]])
        except Exception:  # any failure: the teacher, not the row, is broken
            return False
        return True

    async def _with_retries(
        self, attempt: Callable[[], Awaitable[list[RelevanceLabel]]]
    ) -> list[RelevanceLabel]:
        """`attempt()` until the teacher answers, holding every partition meanwhile.

        Raises:
            ScoringFailed: from `attempt` (not retried).
            _Stopping: a stop was requested during the wait.
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(ScorerUnavailable),
            wait=wait_exponential(
                multiplier=self.cfg.retry_initial_s,
                min=self.cfg.retry_initial_s,
                max=self.cfg.retry_max_s,
            ),
            sleep=self._hold,
            before_sleep=self._note_outage,
            reraise=True,
        )
        try:
            async for state in retrying:
                with state:
                    return await attempt()
            raise AssertionError("unreachable: tenacity re-raises the last error")
        finally:
            if self.membership.holding:
                self.membership.holding = False
                self.consumer.resume(*self.consumer.paused())

    def _note_outage(self, state: RetryCallState) -> None:
        self.stats.scorer_outages += 1
        self.metrics.scorer_errors.inc()
        self.metrics.ready(False, f"teacher unavailable ({_error_of(state)})")
        wait = state.next_action.sleep if state.next_action else 0.0
        log.warning("teacher unavailable (%s); retrying in %.1f s", _error_of(state), wait)

    async def _hold(self, seconds: float) -> None:
        """Wait `seconds` inside the group without consuming: every assigned partition
        paused, any record a poll still returns rewound so it is fetched again later."""
        self.membership.holding = True
        deadline = time.monotonic() + seconds
        while True:
            self.metrics.tick()  # waiting on the teacher, not wedged
            now = time.monotonic()
            if now - self._reported_at >= 1.0:
                # The lag stays visible while the teacher is away.
                self._reported_at = now
                self.metrics.observe_backlog(self.consumer, self._in_hand)
                self.metrics.write_status()
            if self.should_stop():
                raise _Stopping()
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.pause(*assigned)
            polled = self.consumer.poll(timeout_ms=100)
            for tp, batch in polled.items():
                self.consumer.seek(tp, min(r.offset for r in batch))
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(0)

    def _publish(self, labels: list[RelevanceLabel], letters: list[DeadLetter]) -> None:
        """Send labels and dead letters and wait for the broker's acknowledgement of each,
        retrying the whole set while the broker is away (repeats are deduplicated)."""

        def send_all() -> None:
            try:
                send_and_wait()
            except KafkaError:
                # A producer that lost its broker can stay broken after it returns (producer
                # id and sequence state the new broker refuses): the next try gets a new one.
                try:
                    self.producer.close(timeout=0)
                except Exception as exc:
                    log.debug("closing the failed producer: %s", exc)
                self.producer = self._connect(lambda: producer(self.settings))
                raise

        def send_and_wait() -> None:
            futures = [
                self.producer.send(LABELS_TOPIC, key=label.key.encode(), value=label.to_bytes())
                for label in labels
            ]
            futures += [
                self.producer.send(
                    dlq_topic(letter.source_topic),
                    key=f"{letter.source_topic}/{letter.partition}/{letter.offset}".encode(),
                    value=letter.to_bytes(),
                )
                for letter in letters
            ]
            self.producer.flush(timeout=60)
            for future in futures:
                future.get(timeout=60)  # raises if the broker did not take it

        self._broker_retrying(KafkaError, "did not acknowledge the labels; sending again")(send_all)

    def _commit(self, records: list[Any]) -> None:
        """Commit the offsets after `records` on the partitions this member still owns; a
        refused commit only means those rows are labeled again by their next owner."""
        owned = self.consumer.assignment()
        offsets = {tp: o for tp, o in _next_offsets(records).items() if tp in owned}
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except KafkaError as exc:  # CommitFailed, RebalanceInProgress, timeouts, ...
            self.stats.commits_refused += 1
            log.warning("offset commit refused (%s); these rows will be labeled again", exc)


def _error_of(state: RetryCallState) -> str:
    exc = state.outcome.exception() if state.outcome else None
    return f"{type(exc).__name__}: {exc}" if exc else "?"


def _offset_ranges(records: list[Any]) -> str:
    """`partition:first-last,...` of a batch's records (the quality alerts' format)."""
    spans: dict[int, tuple[int, int]] = {}
    for r in records:
        first, last = spans.get(r.partition, (r.offset, r.offset))
        spans[r.partition] = (min(first, r.offset), max(last, r.offset))
    return ",".join(f"{p}:{a}-{b}" for p, (a, b) in sorted(spans.items()))


def _next_offsets(records: list[Any]) -> dict[TopicPartition, OffsetAndMetadata]:
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
