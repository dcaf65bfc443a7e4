"""`freshlabel label backfill`: label historic enriched rows with one teacher version.

Reads enriched rows from Iceberg, skips those that already have a label of that version
(so a rerun does nothing more), scores the rest on the Triton version that serves exactly
that teacher, and writes the labels to the `labels` topic, where the labels sink commits
them like any other label (one row per impression and version).
"""

from __future__ import annotations

from datetime import datetime

import pyarrow.compute as pc
from pydantic import BaseModel
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, GreaterThanOrEqual

from infra.catalog import open_catalog
from infra.config import Settings
from schemas import EnrichedImpression
from serving.labeler.cache import ScoreCache
from serving.labeler.labeler import LABELS_TOPIC, LabelMaker
from serving.labeler.metrics import LabelerMetrics
from serving.labeler.triton_scorer import TritonScorer
from streams.kafka_io import producer


class BackfillStats(BaseModel):
    teacher_version: str
    candidates: int
    already_labeled: int
    labeled: int


async def backfill(
    settings: Settings, teacher_version: str, since: datetime | None = None, batch_rows: int = 2000
) -> BackfillStats:
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
    probe = TritonScorer.from_settings(settings)
    try:
        model_version = await probe.model_version_of(teacher_version)
    finally:
        await probe.close()
    scorer = TritonScorer.from_settings(settings, model_version=model_version)
    cache = ScoreCache(settings.state_dir / "labeler" / "score-cache.sqlite")
    maker = LabelMaker(scorer, cache, LabelerMetrics(settings, serve=False))
    fields = list(EnrichedImpression.model_fields)
    labeled = 0
    try:
        with producer(settings) as prod:
            for start in range(0, todo.num_rows, batch_rows):
                chunk = todo.slice(start, batch_rows).select(fields).to_pylist()
                rows = [EnrichedImpression.model_validate(r, strict=False) for r in chunk]
                labels = await maker.labels_for(rows)
                futures = [
                    prod.send(LABELS_TOPIC, key=x.key.encode(), value=x.to_bytes()) for x in labels
                ]
                prod.flush()
                for future in futures:
                    future.get(timeout=60)
                labeled += len(labels)
    finally:
        await scorer.close()
        cache.close()
    return BackfillStats(
        teacher_version=teacher_version,
        candidates=enriched.num_rows,
        already_labeled=enriched.num_rows - todo.num_rows,
        labeled=labeled,
    )
