"""What every event model shares: strict typing, UTC timestamps, and its place in the platform."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, PlainSerializer


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _iso_z(value: datetime) -> str:
    # Flink's JSON format reads TIMESTAMP_LTZ as ISO-8601 with a literal 'Z'.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# Timezone-aware on input (a naive time is ambiguous and refused), UTC with 'Z' on the wire.
UtcDatetime = Annotated[
    AwareDatetime, AfterValidator(_to_utc), PlainSerializer(_iso_z, when_used="json")
]


class Event(BaseModel):
    """Base of every topic's record.

    Strict: "3" is not an int and 1 is not a string, so a producer bug shows up in the DLQ
    instead of being coerced. Unknown fields are ignored so producers may add fields first.
    """

    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)

    topic: ClassVar[str]
    table: ClassVar[str]
    # The field used as the Kafka message key, and the event-time field (day partitions).
    key_field: ClassVar[str]
    time_field: ClassVar[str]
    # Fields that identify one event: the sink keeps a single row per key (redeliveries by
    # at-least-once producers or a restored Flink job carry the same key).
    dedupe_key: ClassVar[tuple[str, ...]] = ()
    # The time that a duplicate shares with its original (the sink looks for earlier copies
    # near it); None means `time_field`. Labels use the impression's time, which a relabel
    # days later repeats, not `labeled_at`, which it does not.
    dedupe_time_field: ClassVar[str | None] = None
    # When the fact a row records happened: the sink reports commit time minus this as the
    # row's freshness ("visible in Iceberg" lag). None: the table has no freshness SLA.
    lag_field: ClassVar[str | None] = None

    @property
    def key(self) -> str:
        return str(getattr(self, self.key_field))

    @property
    def time(self) -> datetime:
        value: datetime = getattr(self, self.time_field)
        return value

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode("utf-8")
