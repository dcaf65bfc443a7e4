"""What every event model shares: strict typing, bounded values, UTC timestamps, its place.

The guarantee: a record that validates against an event model can be written to its
Iceberg table and read back by every consumer. So the field types below refuse, at
decode (reason `invalid_value`), what would otherwise fail later and stop a stream:

- integers outside their Iceberg type (`long` is signed 64-bit, `int` 32-bit);
- floats that are NaN or infinite (JSON has no such numbers; consumers compute with them);
- ids and keys that are empty, blank, longer than `ID_MAX_CHARS`, or hold a control
  character (they name rows, Kafka keys and dedupe keys);
- text with a C0 control character other than tab, newline and CR (a NUL ends C strings
  in downstream tools; the others are invisible in logs and UIs);
- times that do not exist once converted to UTC (`0001-01-01T00:00+01:00`).

Value ranges with a meaning (a probability in [0, 1]) are the quality gate's business, not
the type's: such rows go to quarantine with the check they failed, not to the DLQ.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, ClassVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

# Iceberg `long` (the default for a Python int, schemas/registry.py) and `int`.
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
INT_MIN, INT_MAX = -(2**31), 2**31 - 1

# Constraints on one field do not stack with those of its type (the last bound wins), so
# a narrower range restates both ends: `Annotated[int, Field(ge=1, le=LONG_MAX)]`.
Long = Annotated[int, Field(ge=LONG_MIN, le=LONG_MAX)]
# Pair with `IcebergType("int")` (schemas/registry.py) to store it as an Iceberg int.
Int32 = Annotated[int, Field(ge=INT_MIN, le=INT_MAX)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

# Text: anything but C0 control characters other than tab (09), newline (0A) and CR (0D).
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$"
Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN)]

# Ids and keys: non-empty, not blank, no control character at all, bounded length.
ID_MAX_CHARS = 256
ID_PATTERN = r"^[^\x00-\x1f]*[^\x00-\x1f\s][^\x00-\x1f]*$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)]


def _to_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is year 0 in UTC, 9999-12-31T23:30-01:00 is year 10000.
        raise PydanticCustomError(
            "datetime_out_of_range",
            "{value} is outside years 1-9999 once converted to UTC",
            {"value": value.isoformat()},
        ) from None


def _iso_z(value: datetime) -> str:
    # Flink's JSON format reads TIMESTAMP_LTZ as ISO-8601 with a literal 'Z'; isoformat
    # keeps four-digit years (strftime's %Y writes year 1 as "1", which reads back as junk).
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
