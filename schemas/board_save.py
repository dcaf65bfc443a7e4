from __future__ import annotations

from typing import ClassVar

from schemas.base import Event, Id, Text, UtcDatetime


class BoardSave(Event):
    """A user saved a pin to a board; board titles describe the pin in users' own words."""

    topic: ClassVar[str] = "board_saves"
    table: ClassVar[str] = "board_saves"
    key_field: ClassVar[str] = "pin_id"
    time_field: ClassVar[str] = "event_time"
    dedupe_key: ClassVar[tuple[str, ...]] = ("pin_id", "board_id", "user_id", "event_time")

    pin_id: Id
    board_id: Id
    board_title: Text
    user_id: Id
    event_time: UtcDatetime
