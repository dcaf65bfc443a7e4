from __future__ import annotations

from typing import ClassVar

from schemas.base import UtcDatetime
from schemas.impression import Impression


class EnrichedImpression(Impression):
    """An impression with the pin's text features as they were at the impression's time.

    A feature the pin did not have yet is null (never an empty string); each feature
    carries the time it was last updated, so consumers can audit point-in-time joins.
    """

    topic: ClassVar[str] = "impressions.enriched"
    table: ClassVar[str] = "impressions_enriched"

    title: str | None = None
    description: str | None = None
    link_title: str | None = None
    link_description: str | None = None
    content_updated_at: UtcDatetime | None = None
    caption: str | None = None
    caption_updated_at: UtcDatetime | None = None
    board_titles: list[str] | None = None
    boards_updated_at: UtcDatetime | None = None
    top_queries: list[str] | None = None
    top_queries_updated_at: UtcDatetime | None = None
    enriched_at: UtcDatetime | None = None
