"""`freshlabel label backfill`: label historic enriched rows with one teacher version.

Reads enriched rows from Iceberg, skips those that already have a label of that version
(so a rerun does nothing more), scores the rest on the Triton version that serves exactly
that teacher, and writes the labels to the `labels` topic, where the labels sink commits
them like any other label (one row per impression and version).

A backfill never delays fresh traffic: its requests carry `labeler.backfill_priority` (2),
which Triton's dynamic batcher dequeues only after the live labeler's
`labeler.live_priority` (1) requests. It reports as the `labeler-backfill` worker in
`freshlabel status` (pairs/s, teacher p50/p95, rows left) and, when
`labeler.backfill_metrics_port` is set, on Prometheus with `traffic="backfill"`.

Stopping it (SIGTERM, `should_stop`) ends it after the step in progress is published; a
rerun labels only what is not in the labels table yet, and the labels sink drops the
repeats of labels published but not yet committed there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import pyarrow.compute as pc
from pydantic import BaseModel
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, GreaterThanOrEqual

from infra.catalog import open_catalog
from infra.config import Settings
from infra.kafka_io import producer
from infra.progress import progress_bar
from schemas import EnrichedImpression
from serving.labeler.cache import ScoreCache
from serving.labeler.labeler import LABELS_TOPIC, LabelMaker
from serving.labeler.metrics import LabelerMetrics
from serving.labeler.triton_scorer import TritonScorer


class BackfillStats(BaseModel):
    teacher_version: str
    candidates: int
    already_labeled: int
    labeled: int
    # False when a stop request ended it before every candidate was labeled.
    complete: bool = True


async def backfill(
    settings: Settings,
    teacher_version: str,
    since: datetime | None = None,
    batch_rows: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> BackfillStats:
    """Label the enriched rows in Iceberg that have no label of `teacher_version` yet.

    Args:
        settings: The platform settings.
        teacher_version: The teacher to label with; Triton must serve it.
        since: Only impressions at or after this event time.
        batch_rows: Rows scored and published per step (default
            `labeler.backfill_batch_rows`).
        should_stop: Polled between steps; True ends the backfill early (`complete=False`).

    Returns:
        What was found and labeled.

    Raises:
        TeacherVersionMissing: Triton does not serve `teacher_version`.
        ScorerUnavailable, ScoringFailed: the teacher went away or refused a step.
    """
    step = batch_rows or settings.labeler.backfill_batch_rows
    catalog = open_catalog(settings)
    ns = settings.catalog.namespace
    row_filter: BooleanExpression = AlwaysTrue()
    if since is not None:
        row_filter = GreaterThanOrEqual("event_time", since.isoformat())
    enriched = (
        catalog.load_table(f"{ns}.impressions_enriched").scan(row_filter=row_filter).to_arrow()
    )
    done = (
        catalog.load_table(f"{ns}.labels")
        .scan(
            row_filter=EqualTo("teacher_version", teacher_version),
            selected_fields=("impression_id",),
        )
        .to_arrow()
        .column("impression_id")
    )
    todo = enriched.filter(pc.invert(pc.is_in(enriched.column("impression_id"), value_set=done)))
    probe = TritonScorer.from_settings(settings, traffic="backfill")
    try:
        model_version = await probe.model_version_of(teacher_version)
    finally:
        await probe.close()
    scorer = TritonScorer.from_settings(settings, model_version=model_version, traffic="backfill")
    cache = ScoreCache.in_state_dir(settings.state_dir)
    metrics = LabelerMetrics(settings, traffic="backfill")
    # One teacher call = one round of the backfill's in-flight requests: its latency is a
    # round trip, and its scores are cached before the next.
    cfg = settings.labeler
    maker = LabelMaker(
        scorer, cache, metrics, chunk_rows=cfg.backfill_request_rows * cfg.backfill_max_in_flight
    )
    fields = list(EnrichedImpression.model_fields)
    labeled = 0
    error: str | None = None
    bar = progress_bar(total=todo.num_rows, desc=f"backfill {teacher_version}", unit="row")
    try:
        with producer(settings) as prod, bar:
            for start in range(0, todo.num_rows, step):
                metrics.observe_backlog_of(todo.num_rows - start)
                if should_stop():
                    break
                chunk = todo.slice(start, step).select(fields).to_pylist()
                rows = [EnrichedImpression.model_validate(r, strict=False) for r in chunk]
                labels = await maker.labels_for(rows)
                futures = [
                    prod.send(LABELS_TOPIC, key=x.key.encode(), value=x.to_bytes()) for x in labels
                ]
                prod.flush()
                for future in futures:
                    future.get(timeout=60)
                labeled += len(labels)
                bar.update(len(rows))
                metrics.observe_backlog_of(todo.num_rows - start - len(rows))
                metrics.record_batch(labels, rows, cache.hit_rate)
            metrics.observe_backlog_of(todo.num_rows - labeled)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        await scorer.close()
        cache.close()
        if error is None:
            metrics.write_status(stopped=True)
        else:
            metrics.write_status(error=" ".join(error.split()))
    return BackfillStats(
        teacher_version=teacher_version,
        candidates=enriched.num_rows,
        already_labeled=enriched.num_rows - todo.num_rows,
        labeled=labeled,
        complete=labeled == todo.num_rows,
    )
