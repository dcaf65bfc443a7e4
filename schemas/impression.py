from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from schemas.base import Event, UtcDatetime


class Impression(Event):
    """A pin shown at a position for a query, to a user, at a time."""

    topic: ClassVar[str] = "impressions"
    table: ClassVar[str] = "impressions"
    key_field: ClassVar[str] = "impression_id"
    lag_field: ClassVar[str | None] = "event_time"
    time_field: ClassVar[str] = "event_time"
    dedupe_key: ClassVar[tuple[str, ...]] = ("impression_id",)

    impression_id: str
    request_id: str
    user_id: str
    query: str
    pin_id: str
    position: int = Field(ge=1)
    country: str
    locale: str
    event_time: UtcDatetime
