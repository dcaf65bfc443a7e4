from __future__ import annotations

from typing import ClassVar, Literal

from schemas.base import Event, Id, Text, UtcDatetime

Action = Literal["click", "save", "closeup", "long_click"]


class Engagement(Event):
    """A user acted on an impression; engagements per (pin, query) derive top queries."""

    topic: ClassVar[str] = "engagements"
    table: ClassVar[str] = "engagements"
    key_field: ClassVar[str] = "pin_id"
    time_field: ClassVar[str] = "event_time"
    dedupe_key: ClassVar[tuple[str, ...]] = ("impression_id", "action", "event_time")

    impression_id: Id
    query: Text
    pin_id: Id
    action: Action
    event_time: UtcDatetime
