"""Tables the data-quality gate writes (quality/): check results and quarantined rows.

These models have no Kafka topic of their own; `topic` names a pseudo topic only so that
the topic lookup of schemas/topics.py stays one-to-one.

Quarantine: one table per checked table, `<table>_quarantine`, with exactly the source
table's columns plus `failed_checks`. Chosen over one generic table holding rows as JSON
because the people who answer an alert query the offending rows with the same columns
(and filters) they know from the source table, and a fixed row can be appended back to
the source table as it is. When the source model evolves, its quarantine model (a
subclass) evolves with it in the same `freshlabel schemas register`.
"""

from __future__ import annotations

from typing import ClassVar

from schemas.base import Event, UtcDatetime
from schemas.enriched_impression import EnrichedImpression
from schemas.relevance_label import RelevanceLabel


class CheckResult(Event):
    """One check on one batch: a row of `dq_results`, and what the gate hands back.

    Not a Kafka record: in the table, `_kafka_partition` and `_kafka_offset` hold -1,
    `_batch_id` the checked batch's id and `_ingested_at` when the result was written.
    """

    topic: ClassVar[str] = "dq_results"
    table: ClassVar[str] = "dq_results"
    key_field: ClassVar[str] = "batch_key"
    time_field: ClassVar[str] = "evaluated_at"

    table_name: str
    check: str
    # The column the check looked at, when it looks at one.
    column: str | None = None
    severity: str
    passed: bool
    # True when the check could not be judged (too few rows, no reference window yet).
    skipped: bool = False
    observed_value: float | None = None
    threshold_min: float | None = None
    threshold_max: float | None = None
    # The threshold as people read it, e.g. ">= 0.5" or "in 56 known values".
    threshold: str
    rows: int
    failed_rows: int
    batch_id: str
    # (table, first offset of each partition): the same Kafka records re-read after a
    # crash map to the same key, so their results are overwritten, not duplicated.
    batch_key: str
    # Kafka offsets the batch covered, "partition:first-last,...".
    offset_ranges: str
    evaluated_at: UtcDatetime
    message: str
    # JSON: histograms of distribution checks, reference used, sample offending rows.
    details: str | None = None


class EnrichedImpressionQuarantine(EnrichedImpression):
    """Enriched impressions a critical check refused, with the checks they failed."""

    topic: ClassVar[str] = "impressions.enriched.quarantine"
    table: ClassVar[str] = "impressions_enriched_quarantine"

    failed_checks: list[str] | None = None


class RelevanceLabelQuarantine(RelevanceLabel):
    """Labels a critical check refused, with the checks they failed."""

    topic: ClassVar[str] = "labels.quarantine"
    table: ClassVar[str] = "labels_quarantine"

    failed_checks: list[str] | None = None


QUALITY_MODELS: tuple[type[Event], ...] = (
    CheckResult,
    EnrichedImpressionQuarantine,
    RelevanceLabelQuarantine,
)

# Checked table -> the table its critical-failure rows go to.
QUARANTINE_TABLES: dict[str, str] = {
    EnrichedImpression.table: EnrichedImpressionQuarantine.table,
    RelevanceLabel.table: RelevanceLabelQuarantine.table,
}
