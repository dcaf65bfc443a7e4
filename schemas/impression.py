from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from schemas.base import LONG_MAX, Event, Id, Text, UtcDatetime


class Impression(Event):
    """A pin shown at a position for a query, to a user, at a time."""

    topic: ClassVar[str] = "impressions"
    table: ClassVar[str] = "impressions"
    key_field: ClassVar[str] = "impression_id"
    lag_field: ClassVar[str | None] = "event_time"
    time_field: ClassVar[str] = "event_time"
    dedupe_key: ClassVar[tuple[str, ...]] = ("impression_id",)

    impression_id: Id
    request_id: Id
    user_id: Id
    query: Text
    pin_id: Id
    position: Annotated[int, Field(ge=1, le=LONG_MAX)]
    country: Text
    locale: Text
    event_time: UtcDatetime
