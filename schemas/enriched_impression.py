from __future__ import annotations

from typing import ClassVar

from schemas.base import Text, UtcDatetime
from schemas.impression import Impression


class EnrichedImpression(Impression):
    """An impression with the pin's text features as they were at the impression's time.

    A feature the pin did not have yet is null (never an empty string); each feature
    carries the time it was last updated, so consumers can audit point-in-time joins.
    """

    topic: ClassVar[str] = "impressions.enriched"
    table: ClassVar[str] = "impressions_enriched"

    title: Text | None = None
    description: Text | None = None
    link_title: Text | None = None
    link_description: Text | None = None
    content_updated_at: UtcDatetime | None = None
    caption: Text | None = None
    caption_updated_at: UtcDatetime | None = None
    board_titles: list[Text] | None = None
    boards_updated_at: UtcDatetime | None = None
    top_queries: list[Text] | None = None
    top_queries_updated_at: UtcDatetime | None = None
    enriched_at: UtcDatetime | None = None
