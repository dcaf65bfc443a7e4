"""Event models (one per topic) and the Iceberg schemas derived from them."""

from schemas.base import Event
from schemas.board_save import BoardSave
from schemas.engagement import Engagement
from schemas.enriched_impression import EnrichedImpression
from schemas.impression import Impression
from schemas.pin_caption import PinCaption
from schemas.pin_content import PinContent
from schemas.relevance_label import RelevanceLabel

__all__ = [
    "BoardSave",
    "Engagement",
    "EnrichedImpression",
    "Event",
    "Impression",
    "PinCaption",
    "PinContent",
    "RelevanceLabel",
]
