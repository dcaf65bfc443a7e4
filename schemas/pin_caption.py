from __future__ import annotations

from typing import ClassVar

from schemas.base import Event, Id, Text, UtcDatetime


class PinCaption(Event):
    """A VLM caption of a pin's image; arrives after the pin and may be replaced later."""

    topic: ClassVar[str] = "pin_captions"
    table: ClassVar[str] = "pin_captions"
    key_field: ClassVar[str] = "pin_id"
    time_field: ClassVar[str] = "created_at"
    dedupe_key: ClassVar[tuple[str, ...]] = ("pin_id", "created_at")

    pin_id: Id
    caption: Text
    captioner_version: Text
    created_at: UtcDatetime
