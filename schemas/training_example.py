from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.base import UtcDatetime
from schemas.enriched_impression import EnrichedImpression


class TrainingExample(EnrichedImpression):
    """A row of a student training set: the enriched impression (features as of its time)
    with one teacher label of one teacher version. Built by `freshlabel dataset build`;
    not a Kafka record (`topic` names a pseudo topic to keep the topic lookup one-to-one)."""

    topic: ClassVar[str] = "training_examples"
    table: ClassVar[str] = "training_examples"
    dedupe_key: ClassVar[tuple[str, ...]] = ("impression_id", "teacher_version")

    teacher_version: str
    label_scale: int = Field(ge=2)
    probs: list[float]
    score: float
    # argmax of probs, 1-based like the human grades the teacher learned from.
    label: int
    labeled_at: UtcDatetime
    input_hash: str
