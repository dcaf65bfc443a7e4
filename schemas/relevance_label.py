from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.base import Event, UtcDatetime


class RelevanceLabel(Event):
    """The teacher's graded judgement of one impression, tied to the teacher that made it."""

    topic: ClassVar[str] = "labels"
    table: ClassVar[str] = "labels"
    key_field: ClassVar[str] = "impression_id"
    time_field: ClassVar[str] = "labeled_at"
    lag_field: ClassVar[str | None] = "impression_time"
    dedupe_key: ClassVar[tuple[str, ...]] = ("impression_id", "teacher_version")
    dedupe_time_field: ClassVar[str | None] = "impression_time"

    impression_id: str
    query: str
    pin_id: str
    teacher_version: str
    # Number of relevance levels of the teacher that produced the label (4, 5, ...).
    label_scale: int = Field(ge=2)
    probs: list[float]
    score: float
    labeled_at: UtcDatetime
    input_hash: str
    # The labeled impression's event time: freshness (event time -> label visible) and
    # time-based training splits read it without joining the enriched table. Null on
    # labels written before it existed.
    impression_time: UtcDatetime | None = None
