from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from schemas.base import LONG_MAX, Event, FiniteFloat, Id, Text, UtcDatetime


class RelevanceLabel(Event):
    """The teacher's graded judgement of one impression, tied to the teacher that made it."""

    topic: ClassVar[str] = "labels"
    table: ClassVar[str] = "labels"
    key_field: ClassVar[str] = "impression_id"
    time_field: ClassVar[str] = "labeled_at"
    lag_field: ClassVar[str | None] = "impression_time"
    dedupe_key: ClassVar[tuple[str, ...]] = ("impression_id", "teacher_version")
    dedupe_time_field: ClassVar[str | None] = "impression_time"

    impression_id: Id
    query: Text
    pin_id: Id
    teacher_version: Id
    # Number of relevance levels of the teacher that produced the label (4, 5, ...).
    label_scale: Annotated[int, Field(ge=2, le=LONG_MAX)]
    # Finite (NaN/inf refused at decode); whether they are probabilities that sum to 1 and
    # match `score` is for the quality gate (a failing row goes to labels_quarantine).
    probs: list[FiniteFloat]
    score: FiniteFloat
    labeled_at: UtcDatetime
    input_hash: Text
    # The labeled impression's event time: freshness (event time -> label visible) and
    # time-based training splits read it without joining the enriched table. Null on
    # labels written before it existed.
    impression_time: UtcDatetime | None = None
