from __future__ import annotations

from typing import ClassVar

from schemas.base import Event, UtcDatetime


class PinContent(Event):
    """The latest text of a pin; a new record for the same pin replaces the old version."""

    topic: ClassVar[str] = "pin_content"
    table: ClassVar[str] = "pin_content"
    key_field: ClassVar[str] = "pin_id"
    time_field: ClassVar[str] = "updated_at"
    dedupe_key: ClassVar[tuple[str, ...]] = ("pin_id", "updated_at")

    pin_id: str
    title: str | None = None
    description: str | None = None
    link_title: str | None = None
    link_description: str | None = None
    updated_at: UtcDatetime
