from __future__ import annotations

from typing import ClassVar

from schemas.base import Event, UtcDatetime


class PinCaption(Event):
    """A VLM caption of a pin's image; arrives after the pin and may be replaced later."""

    topic: ClassVar[str] = "pin_captions"
    table: ClassVar[str] = "pin_captions"
    key_field: ClassVar[str] = "pin_id"
    time_field: ClassVar[str] = "created_at"
    dedupe_key: ClassVar[tuple[str, ...]] = ("pin_id", "created_at")

    pin_id: str
    caption: str
    captioner_version: str
    created_at: UtcDatetime
