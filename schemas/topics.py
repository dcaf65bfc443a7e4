"""Which model each topic carries: the one lookup consumers and sinks use."""

from __future__ import annotations

from schemas.base import Event
from schemas.board_save import BoardSave
from schemas.engagement import Engagement
from schemas.enriched_impression import EnrichedImpression
from schemas.impression import Impression
from schemas.pin_caption import PinCaption
from schemas.pin_content import PinContent
from schemas.quality import QUALITY_MODELS
from schemas.relevance_label import RelevanceLabel
from schemas.training_example import TrainingExample

MODELS: tuple[type[Event], ...] = (
    Impression,
    PinContent,
    PinCaption,
    BoardSave,
    Engagement,
    EnrichedImpression,
    RelevanceLabel,
    # Student training sets built from enriched rows and labels (no topic of their own).
    TrainingExample,
    # Tables the data-quality gate writes (no topic of their own).
    *QUALITY_MODELS,
)
BY_TOPIC: dict[str, type[Event]] = {m.topic: m for m in MODELS}
BY_TABLE: dict[str, type[Event]] = {m.table: m for m in MODELS}


def model_for_topic(topic: str) -> type[Event]:
    try:
        return BY_TOPIC[topic]
    except KeyError:
        raise KeyError(
            f"no event model for topic {topic!r}; known topics: {', '.join(sorted(BY_TOPIC))}"
        ) from None


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"
