"""`freshlabel label run`: every enriched impression gets a teacher label.

One loop, in order, per poll of `impressions.enriched`:
  decode (bad rows -> DLQ) -> build the teacher input with the training-time text builder
  -> cache lookup under the version Triton serves now -> score the misses on Triton
  -> `RelevanceLabel`s to the `labels` topic, acknowledged -> commit the consumer offsets.
Offsets are never committed for rows without an acknowledged label, so a crash or a Triton
outage repeats work but loses none; the labels sink keeps one row per
(impression_id, teacher_version), so repeats never become duplicates in Iceberg.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import CommitFailedError
from pydantic import BaseModel

from infra.config import Settings
from schemas import EnrichedImpression, RelevanceLabel
from serving.labeler.cache import CachedScore, ScoreCache, cache_key, input_hash
from serving.labeler.metrics import LabelerMetrics
from serving.teacher.text import build_pin_text
from streams.decode import DeadLetterWriter, Decoder
from streams.dlq import DeadLetter
from streams.kafka_io import consumer, producer

log = logging.getLogger(__name__)

SOURCE_TOPIC = "impressions.enriched"
LABELS_TOPIC = "labels"


class ScoredPair(BaseModel):
    probs: list[float]
    score: float
    teacher_version: str
    label_scale: int


class ScorerUnavailable(RuntimeError):
    """The teacher cannot be reached now; the labeler waits and retries the same rows."""


class Scorer(Protocol):
    async def served(self) -> tuple[str, int]:
        """(teacher version, label scale) the server would use for a request now."""
        ...

    async def score(self, queries: Sequence[str], pin_texts: Sequence[str]) -> list[ScoredPair]:
        """One result per pair, each with the version that actually produced it."""
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


@dataclass
class LabelerStats:
    rows: int = 0
    labels: int = 0
    dead_letters: int = 0
    cache_hits: int = 0
    scored: int = 0
    scorer_outages: int = 0
    versions: dict[str, int] = field(default_factory=dict)


class LabelMaker:
    """Rows -> labels: teacher input, cache lookup under the served version, score misses."""

    def __init__(
        self, scorer: Scorer, cache: ScoreCache, metrics: LabelerMetrics, chunk_rows: int = 256
    ) -> None:
        self.scorer = scorer
        self.chunk_rows = chunk_rows
        self.cache = cache
        self.metrics = metrics
        self.cache_hits = 0
        self.scored = 0

    async def labels_for(self, rows: list[EnrichedImpression]) -> list[RelevanceLabel]:
        version, _ = await self.scorer.served()
        texts = [teacher_input(r) for r in rows]
        hashes = [input_hash(r.query, t) for r, t in zip(rows, texts, strict=True)]
        keys = [cache_key(r.query, r.pin_id, h, version) for r, h in zip(rows, hashes, strict=True)]
        found = self.cache.get_many(keys)
        hits = sum(1 for k in keys if k in found)
        # Score each distinct miss once.
        missing = {k: i for i, k in enumerate(keys) if k not in found}
        scored: dict[int, ScoredPair] = {}
        order = list(missing.values())
        for start in range(0, len(order), self.chunk_rows):
            chunk = order[start : start + self.chunk_rows]
            started = time.monotonic()
            results = await self.scorer.score(
                [rows[i].query for i in chunk], [texts[i] for i in chunk]
            )
            self.metrics.observe_teacher(time.monotonic() - started)
            done = dict(zip(chunk, results, strict=True))
            scored.update(done)
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
        now = datetime.now(UTC)
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


class Labeler:
    def __init__(self, settings: Settings, scorer: Scorer, metrics: LabelerMetrics | None = None):
        self.settings = settings
        self.cfg = settings.labeler
        self.scorer = scorer
        self.cache = ScoreCache(
            settings.state_dir / "labeler" / "score-cache.sqlite", self.cfg.cache_memory_items
        )
        self.decoder: Decoder[EnrichedImpression] = Decoder(
            SOURCE_TOPIC, settings.decode, self.cfg.group_id
        )
        self.producer = producer(settings)
        self.dead_letters = DeadLetterWriter(self.producer)
        self.consumer = consumer(
            settings, self.cfg.group_id, SOURCE_TOPIC, max_poll_records=self.cfg.batch_rows
        )
        self.metrics = metrics or LabelerMetrics(settings)
        self.maker = LabelMaker(scorer, self.cache, self.metrics, self.cfg.score_chunk_rows)
        self.stats = LabelerStats()

    async def run(
        self,
        idle_timeout_s: float | None = None,
        max_rows: int | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> LabelerStats:
        last_rows = time.monotonic()
        joined = False
        try:
            while not should_stop():
                polled = self.consumer.poll(timeout_ms=500)
                if self.consumer.assignment() and not joined:
                    joined, last_rows = True, time.monotonic()
                records = [r for batch in polled.values() for r in batch]
                if records:
                    await self._label(records)
                    last_rows = time.monotonic()
                self.metrics.observe_backlog(self.consumer)
                if max_rows is not None and self.stats.rows >= max_rows:
                    break
                idle = time.monotonic() - last_rows
                if idle_timeout_s is not None and joined and idle > idle_timeout_s:
                    break
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        self.consumer.close(autocommit=False)
        self.producer.close()
        self.cache.close()
        self.metrics.write_status(stopped=True)

    async def _label(self, records: list) -> None:  # type: ignore[type-arg]
        rows: list[EnrichedImpression] = []
        for record in records:
            decoded = self.decoder.decode(record)
            if isinstance(decoded, DeadLetter):
                self.dead_letters.send(decoded)
                self.stats.dead_letters += 1
                self.metrics.dead_letters.inc()
            else:
                rows.append(decoded)
        labels = await self._with_retries(lambda: self.maker.labels_for(rows)) if rows else []
        futures = [
            self.producer.send(LABELS_TOPIC, key=label.key.encode(), value=label.to_bytes())
            for label in labels
        ]
        self.producer.flush()
        for future in futures:
            future.get(timeout=60)  # raises if the broker did not take a label
        self.dead_letters.flush()
        try:
            self.consumer.commit(_next_offsets(records))
        except CommitFailedError:
            # The group rebalanced: the new owner labels these rows again and the labels
            # sink keeps one row per (impression, version).
            log.warning("offset commit refused after a rebalance; rows will be relabeled")
        self.stats.rows += len(records)
        self.stats.cache_hits, self.stats.scored = self.maker.cache_hits, self.maker.scored
        self.stats.labels += len(labels)
        for label in labels:
            self.stats.versions[label.teacher_version] = (
                self.stats.versions.get(label.teacher_version, 0) + 1
            )
        self.metrics.record_batch(labels, rows, self.cache.hit_rate)

    async def _with_retries(self, attempt: Callable) -> list[RelevanceLabel]:  # type: ignore[type-arg]
        delay = self.cfg.retry_initial_s
        paused = False
        try:
            while True:
                try:
                    result: list[RelevanceLabel] = await attempt()
                    return result
                except ScorerUnavailable as exc:
                    self.stats.scorer_outages += 1
                    self.metrics.scorer_errors.inc()
                    log.warning("teacher unavailable (%s); retrying in %.1f s", exc, delay)
                    if not paused:
                        # Stay in the consumer group while waiting, without fetching more.
                        self.consumer.pause(*self.consumer.assignment())
                        paused = True
                    deadline = time.monotonic() + delay
                    while time.monotonic() < deadline:
                        self.consumer.poll(timeout_ms=100)
                        await asyncio.sleep(0)
                    delay = min(delay * 2, self.cfg.retry_max_s)
        finally:
            if paused:
                self.consumer.resume(*self.consumer.paused())


def _next_offsets(records: list) -> dict[TopicPartition, OffsetAndMetadata]:  # type: ignore[type-arg]
    offsets: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        offsets[tp] = max(offsets.get(tp, 0), r.offset + 1)
    return {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
