"""The dead-letter record: the original bytes, where they came from, and why they were refused."""

from __future__ import annotations

import base64
from collections import Counter
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class Reason(StrEnum):
    INVALID_UTF8 = "invalid_utf8"
    MALFORMED_JSON = "malformed_json"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    INVALID_VALUE = "invalid_value"
    OVERSIZED_TEXT = "oversized_text"
    OVERSIZED_RECORD = "oversized_record"
    EMPTY_VALUE = "empty_value"
    LATE_EVENT = "late_event"
    # Event time beyond decode.max_future_s ahead or decode.max_age_days behind the clock.
    EVENT_TIME_OUT_OF_RANGE = "event_time_out_of_range"
    # The teacher refused this row for good (not an outage): labeled never, kept here.
    SCORING_FAILED = "scoring_failed"


class DeadLetter(BaseModel):
    """One refused record. `value_b64` holds the exact bytes so it can be fixed and replayed."""

    source_topic: str
    partition: int
    offset: int
    reason: Reason
    detail: str
    key_b64: str | None
    value_b64: str | None
    consumer: str
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @classmethod
    def of(
        cls,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        reason: Reason,
        detail: str,
        consumer: str,
    ) -> DeadLetter:
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            reason=reason,
            detail=detail[:2000],
            key_b64=base64.b64encode(key).decode() if key is not None else None,
            value_b64=base64.b64encode(value).decode() if value is not None else None,
            consumer=consumer,
        )

    @property
    def value(self) -> bytes | None:
        return base64.b64decode(self.value_b64) if self.value_b64 is not None else None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


class DeadLetterCounters:
    """Counts of refused records by (topic, reason), for reports and metrics."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    def add(self, letter: DeadLetter) -> None:
        self.counts[(letter.source_topic, letter.reason.value)] += 1

    def by_reason(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for (_, reason), n in self.counts.items():
            totals[reason] += n
        return dict(totals)

    @property
    def total(self) -> int:
        return sum(self.counts.values())
