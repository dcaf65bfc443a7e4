from __future__ import annotations

from typing import ClassVar

from schemas.base import Event, Id, Text, UtcDatetime


class PinContent(Event):
    """The latest text of a pin; a new record for the same pin replaces the old version."""

    topic: ClassVar[str] = "pin_content"
    table: ClassVar[str] = "pin_content"
    key_field: ClassVar[str] = "pin_id"
    time_field: ClassVar[str] = "updated_at"
    dedupe_key: ClassVar[tuple[str, ...]] = ("pin_id", "updated_at")

    pin_id: Id
    title: Text | None = None
    description: Text | None = None
    link_title: Text | None = None
    link_description: Text | None = None
    updated_at: UtcDatetime
