"""The dead-letter record: the original bytes, where they came from, and why they were refused.

A dead letter always fits in a Kafka record: `DeadLetter.fitted` shrinks one that would not
(a 750 KB record is 1 MB once base64-encoded) to a prefix of the value, and says so with
`value_truncated`, the original `value_size` and `value_sha256`; its source topic, partition
and offset still locate the original in the source topic for as long as that keeps it. New
fields are optional, so readers of older letters (and of those Flink writes) keep working.
"""

from __future__ import annotations

import base64
import hashlib
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


# A truncated letter keeps at most this much of the key (keys are ids, rarely near it).
KEY_PREFIX_BYTES = 1024
# The smallest letter `fitted` promises: the metadata with a capped detail and key.
MIN_LETTER_BYTES = 8192
DETAIL_MAX_CHARS = 2000


def _b64(data: bytes | None) -> str | None:
    return base64.b64encode(data).decode() if data is not None else None


class DeadLetter(BaseModel):
    """One refused record. `value_b64` holds the exact bytes so it can be fixed and replayed,
    unless `value_truncated`: then it holds the first bytes only, and the whole record is
    found at `source_topic`/`partition`/`offset` (check it against `value_sha256`)."""

    source_topic: str
    partition: int
    offset: int
    reason: Reason
    detail: str
    key_b64: str | None
    value_b64: str | None
    consumer: str
    failed_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    # Size and SHA-256 (hex) of the original value; None on letters written before these
    # existed and on those Flink writes.
    value_size: int | None = None
    value_sha256: str | None = None
    value_truncated: bool = False
    key_size: int | None = None
    key_truncated: bool = False

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
        """The letter for one refused record, keeping its exact key and value bytes."""
        return cls(
            source_topic=topic,
            partition=partition,
            offset=offset,
            reason=reason,
            detail=detail[:DETAIL_MAX_CHARS],
            key_b64=_b64(key),
            value_b64=_b64(value),
            consumer=consumer,
            value_size=len(value) if value is not None else None,
            value_sha256=hashlib.sha256(value).hexdigest() if value is not None else None,
            key_size=len(key) if key is not None else None,
        )

    @property
    def value(self) -> bytes | None:
        """The original value, or its first bytes when `value_truncated`."""
        return base64.b64decode(self.value_b64) if self.value_b64 is not None else None

    @property
    def key(self) -> bytes | None:
        """The original key, or its first bytes when `key_truncated`."""
        return base64.b64decode(self.key_b64) if self.key_b64 is not None else None

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def fitted(self, max_bytes: int) -> DeadLetter:
        """This letter if its JSON is at most `max_bytes`, else one that keeps a prefix of
        the value (and of a long key) and fits.

        Args:
            max_bytes: the largest serialized letter allowed; at least `MIN_LETTER_BYTES`.

        Returns:
            A letter whose `to_bytes()` is at most `max_bytes` long.

        Raises:
            ValueError: `max_bytes` is below `MIN_LETTER_BYTES`.
        """
        if max_bytes < MIN_LETTER_BYTES:
            raise ValueError(
                f"dead letters need at least {MIN_LETTER_BYTES} bytes, got {max_bytes}; "
                "raise decode.max_dead_letter_bytes"
            )
        if len(self.to_bytes()) <= max_bytes:
            return self
        value, key = self.value, self.key
        update: dict[str, object] = {"detail": self.detail[:DETAIL_MAX_CHARS]}
        # A letter fitted again (to a smaller size) keeps the original's size and hash.
        if value is not None:
            update.update(
                value_size=self.value_size if self.value_truncated else len(value),
                value_sha256=(
                    self.value_sha256 if self.value_truncated else hashlib.sha256(value).hexdigest()
                ),
                value_truncated=True,
                value_b64="",
            )
        if key is not None and len(key) > KEY_PREFIX_BYTES:
            update.update(
                key_b64=_b64(key[:KEY_PREFIX_BYTES]),
                key_size=self.key_size if self.key_truncated else len(key),
                key_truncated=True,
            )
        bare = self.model_copy(update=update)
        if len(bare.to_bytes()) > max_bytes:  # a detail of escaped control characters
            bare = bare.model_copy(update={"detail": bare.detail[:200]})
        if value is None:
            return bare
        # base64 holds 3 bytes in 4 characters, none of which JSON escapes: exact budget.
        room = max_bytes - len(bare.to_bytes())
        keep = max(0, room // 4 * 3)
        return bare.model_copy(update={"value_b64": _b64(value[:keep])})


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
