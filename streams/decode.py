"""The one decode step every consumer uses: bytes in, a typed event or a dead letter out.

Nothing is dropped and nothing stops the stream: each record either validates against its
topic's model (schemas/: typed, bounded by its Iceberg types, its event time within
[now - decode.max_age_days, now + decode.max_future_s]) or becomes a `DeadLetter` that keeps
the original bytes, its source topic/partition/offset and a one-line reason naming the
field. `parse` raises nothing but `Rejected`; a value the model would take but that breaks
while being checked (an overflow, say) is refused too. `DeadLetterWriter` writes letters
to `<topic>.dlq`, shrinking any that would not fit in a Kafka request, so a poison record
costs one DLQ entry, never the consumer.

Two ways through, one verdict: `Decoder.decode_bytes` judges one record with the strict
model; `Decoder.decode_rows` (the sink's, after `use_columns`) decodes a whole poll into the
table's Arrow columns with `streams.fast_decode`, which vouches only for records it is sure
the strict model accepts unchanged and hands every other one to `parse`. So both give the
same rows and the same dead letters, reason and detail included
(tests/test_sink_fast_path.py compares them on every bad-input kind).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

import numpy as np
import pyarrow as pa
from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import MessageSizeTooLargeError
from kafka.producer.future import FutureRecordMetadata
from pydantic import ValidationError

from infra.config import DecodeSettings
from schemas.base import ID_PATTERN, Event
from schemas.topics import dlq_topic, model_for_topic
from streams.arrow_rows import model_schema
from streams.dlq import MIN_LETTER_BYTES, DeadLetter, DeadLetterCounters, Reason
from streams.fast_decode import FastDecoder, Vouched, merge_rows, to_micros

log = logging.getLogger(__name__)

E = TypeVar("E", bound=Event)

# pydantic error types that mean "the right type, a value it may not hold".
_VALUE_ERRORS = {
    "literal_error",
    "enum",
    "greater_than_equal",
    "greater_than",
    "less_than",
    "less_than_equal",
    "finite_number",
    "string_too_short",
    "string_too_long",
    "string_pattern_mismatch",
    "datetime_out_of_range",
}

# Fewer records than this are decoded strictly: the columnar checks cost ~1 ms a call.
FAST_MIN_RECORDS = 32

# Room a Kafka record batch needs around a letter's value (headers, key, batch framing).
_RECORD_OVERHEAD_BYTES = 4096


def _control_character(text: str, allowed: str) -> str | None:
    for index, char in enumerate(text):
        if char < " " and char not in allowed:
            return f"control character U+{ord(char):04X} at index {index}"
    return None


def _explain(kind: str, where: str, error: Any) -> str:
    """One line naming the field and what is wrong with its value."""
    value = error.get("input")
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    if kind == "string_too_short":
        return f"{where}: empty; an id or key needs a value"
    if kind == "string_pattern_mismatch" and isinstance(value, str):
        is_id = error.get("ctx", {}).get("pattern") == ID_PATTERN
        if is_id:
            problem = _control_character(value, "") or "blank"
            return f"{where}: {problem}; an id or key may not be blank or hold control characters"
        problem = _control_character(value, "\t\n\r") or "a control character"
        return f"{where}: {problem}; text may hold tab, newline and CR but no other C0 control"
    if kind == "datetime_out_of_range":
        return f"{where}: {error['msg']}"
    return f"{where}: {error['msg']} (got {shown})"


def _reason_for(error: ValidationError) -> tuple[Reason, str]:
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    where = ".".join(str(p) for p in first["loc"]) or "(record)"
    if kind == "json_invalid":
        return Reason.MALFORMED_JSON, f"{where}: {first['msg']}"
    if kind == "missing":
        return Reason.MISSING_FIELD, f"{where}: {first['msg']}"
    if kind in _VALUE_ERRORS:
        return Reason.INVALID_VALUE, _explain(kind, where, first)
    return Reason.WRONG_TYPE, f"{where}: {first['msg']}"


def _oversized(event: Event, limit: int) -> str | None:
    for name, value in event:
        texts: Iterable[Any] = value if isinstance(value, list) else (value,)
        for text in texts:
            if isinstance(text, str) and (size := len(text.encode("utf-8"))) > limit:
                return f"{name}: {size} bytes of text, limit {limit} (decode.max_text_bytes)"
    return None


def _time_window(now: datetime, limits: DecodeSettings) -> tuple[datetime, datetime]:
    """[now - max_age_days, now + max_future_s], clamped to the years datetime holds."""
    try:
        earliest = now - timedelta(days=limits.max_age_days)
    except OverflowError:
        earliest = datetime.min.replace(tzinfo=UTC)
    try:
        latest = now + timedelta(seconds=limits.max_future_s)
    except OverflowError:
        latest = datetime.max.replace(tzinfo=UTC)
    return earliest, latest


def _out_of_range(
    event: Event, now: datetime, limits: DecodeSettings, window: tuple[datetime, datetime]
) -> str | None:
    at = event.time
    earliest, latest = window
    if earliest <= at <= latest:
        return None
    if at > latest:
        ahead = (at - now).total_seconds()
        return (
            f"{event.time_field}: {at.isoformat()} is {ahead:.0f} s ahead of the clock "
            f"({now.isoformat()}), limit {limits.max_future_s:g} s (decode.max_future_s)"
        )
    days = (now - at).total_seconds() / 86400
    return (
        f"{event.time_field}: {at.isoformat()} is {days:.1f} days before the clock "
        f"({now.isoformat()}), limit {limits.max_age_days:g} days (decode.max_age_days)"
    )


class Rejected(Exception):
    """Internal: carries the reason a record was refused."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse(
    model: type[E],
    value: bytes | None,
    limits: DecodeSettings,
    now: datetime | None = None,
    window: tuple[datetime, datetime] | None = None,
) -> E:
    """Validate one record's bytes against `model`.

    Args:
        model: the topic's event model.
        value: the record's value bytes.
        limits: size and event-time limits (`decode.*`).
        now: the clock the event time is checked against; default the wall clock.
        window: the event-time window for `now`, when the caller has it already.

    Returns:
        The validated event.

    Raises:
        Rejected: with the reason and a one-line detail, for any record that is refused.
    """
    if value is None or len(value) == 0:
        raise Rejected(Reason.EMPTY_VALUE, "record has no value (null or empty)")
    if len(value) > limits.max_record_bytes:
        raise Rejected(
            Reason.OVERSIZED_RECORD,
            f"{len(value)} bytes, limit {limits.max_record_bytes} (decode.max_record_bytes)",
        )
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(Reason.INVALID_UTF8, f"byte {exc.start}: {exc.reason}") from None
    try:
        event = model.model_validate_json(text)
    except ValidationError as exc:
        raise Rejected(*_reason_for(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a value that breaks a check is still a bad value
        raise Rejected(Reason.INVALID_VALUE, f"(record): {type(exc).__name__}: {exc}") from None
    # No decoded text is longer in UTF-8 than its JSON: a small record needs no text check.
    if len(value) > limits.max_text_bytes and (problem := _oversized(event, limits.max_text_bytes)):
        raise Rejected(Reason.OVERSIZED_TEXT, problem)
    now = now or datetime.now(UTC)
    problem = _out_of_range(event, now, limits, window or _time_window(now, limits))
    if problem is not None:
        raise Rejected(Reason.EVENT_TIME_OUT_OF_RANGE, problem)
    return event


class Decoder(Generic[E]):
    """Decodes records of one topic; refused ones become dead letters and are counted."""

    def __init__(
        self,
        topic: str,
        limits: DecodeSettings,
        consumer_name: str,
        model: type[E] | None = None,
        counters: DeadLetterCounters | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.topic = topic
        self.model: type[Any] = model or model_for_topic(topic)
        self.limits = limits
        self.consumer_name = consumer_name
        self.counters = counters or DeadLetterCounters()
        # The clock event times are checked against (tests pin it); its window is worked
        # out again when the clock has moved on by a second.
        self.clock = clock or (lambda: datetime.now(UTC))
        self._window_at: datetime | None = None
        self._window = (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
        # Set by use_columns: the bulk decoder and the model columns it builds.
        self.fast: FastDecoder | None = None
        self.columns: pa.Schema | None = None

    def _window_for(self, now: datetime) -> tuple[datetime, datetime]:
        if self._window_at is None or abs((now - self._window_at).total_seconds()) >= 1.0:
            self._window_at, self._window = now, _time_window(now, self.limits)
        return self._window

    def decode(self, record: ConsumerRecord) -> E | DeadLetter:
        return self.decode_bytes(record.value, record.partition, record.offset, record.key)

    def decode_bytes(
        self, value: bytes | None, partition: int, offset: int, key: bytes | None = None
    ) -> E | DeadLetter:
        now = self.clock()
        return self._decode(value, partition, offset, key, now, self._window_for(now))

    def _decode(
        self,
        value: bytes | None,
        partition: int,
        offset: int,
        key: bytes | None,
        now: datetime,
        window: tuple[datetime, datetime],
    ) -> E | DeadLetter:
        try:
            event: E = parse(self.model, value, self.limits, now, window)
            return event
        except Rejected as rejected:
            letter = DeadLetter.of(
                topic=self.topic,
                partition=partition,
                offset=offset,
                key=key,
                value=value,
                reason=rejected.reason,
                detail=rejected.detail,
                consumer=self.consumer_name,
            )
            self.counters.add(letter)
            return letter

    def use_columns(self, schema: pa.Schema, fast: bool = True) -> None:
        """Decode into Arrow columns of `schema` (the table's) from now on: `decode_rows`.

        Args:
            schema: the Iceberg table's Arrow schema; its model columns are built.
            fast: use the bulk fast path (`sink.fast_decode`); False judges every record
                with the strict model.
        """
        limit = self.limits.max_text_bytes
        self.fast = FastDecoder.for_model(self.model, schema, limit) if fast else None
        self.columns = model_schema(schema)

    def decode_rows(
        self,
        values: Sequence[bytes | None],
        partitions: Sequence[int] | np.ndarray,
        offsets: Sequence[int] | np.ndarray,
        keys: Sequence[bytes | None],
    ) -> DecodedRows:
        """Decode many records at once: the same rows and dead letters as `decode_bytes`
        record by record, at a fraction of the cost (streams/fast_decode.py).

        Args:
            values: record values, in offset order.
            partitions: each record's partition.
            offsets: each record's offset.
            keys: each record's key.

        Returns:
            The accepted records' model columns with their input positions, and the
            refused ones as (counted) dead letters.

        Raises:
            RuntimeError: `use_columns` was not called first.
        """
        if self.columns is None:
            raise RuntimeError(f"decoder for {self.topic}: call use_columns(schema) first")
        now = self.clock()
        window = self._window_for(now)
        if self.fast is not None and len(values) >= FAST_MIN_RECORDS:
            vouched = self.fast.vouch(values, (to_micros(window[0]), to_micros(window[1])))
        else:
            empty = pa.RecordBatch.from_pylist([], schema=self.columns)
            vouched = Vouched(empty, np.empty(0, np.int64), list(range(len(values))))
        events: list[Event] = []
        index: list[int] = []
        letters: list[DeadLetter] = []
        for i in vouched.strict:
            decoded = self._decode(
                values[i], int(partitions[i]), int(offsets[i]), keys[i], now, window
            )
            if isinstance(decoded, DeadLetter):
                letters.append(decoded)
            else:
                events.append(decoded)
                index.append(i)
        rows, positions = merge_rows(self.columns, vouched, events, index)
        return DecodedRows(rows, positions, letters)


@dataclass
class DecodedRows:
    """What `Decoder.decode_rows` made of a list of records."""

    # Model columns (the table's Arrow types) of the accepted records, in input order.
    rows: pa.RecordBatch
    # The accepted records' positions in the input.
    index: np.ndarray
    # The refused records' dead letters, in input order.
    letters: list[DeadLetter]


class DeadLetterWriter:
    """Sends dead letters to `<topic>.dlq`; `flush()` before committing source offsets.

    Never fails for a letter's size: a letter over `max_bytes` (default
    `decode.max_dead_letter_bytes`, capped below the producer's `max_request_size`) is
    sent as `DeadLetter.fitted`, and one the broker still refuses as too large is resent
    at the smallest size.
    """

    def __init__(self, producer: KafkaProducer, max_bytes: int | None = None) -> None:
        self.producer = producer
        limit = max_bytes if max_bytes is not None else DecodeSettings().max_dead_letter_bytes
        request_max = int(producer.config.get("max_request_size", 1_048_576))
        self.max_bytes = max(MIN_LETTER_BYTES, min(limit, request_max - _RECORD_OVERHEAD_BYTES))
        self.sent = 0
        self.truncated = 0
        self._pending: list[tuple[DeadLetter, FutureRecordMetadata]] = []

    def _send(self, letter: DeadLetter, max_bytes: int) -> DeadLetter:
        fitted = letter.fitted(max_bytes)
        topic = dlq_topic(letter.source_topic)
        key = f"{letter.source_topic}/{letter.partition}/{letter.offset}".encode()
        try:
            future = self.producer.send(topic, key=key, value=fitted.to_bytes())
        except MessageSizeTooLargeError:
            # The producer's own estimate is above ours (compression, framing): the minimum.
            fitted = letter.fitted(MIN_LETTER_BYTES)
            future = self.producer.send(topic, key=key, value=fitted.to_bytes())
        self._pending.append((fitted, future))
        return fitted

    def send(self, letter: DeadLetter) -> None:
        """Queue one letter (shrunk to fit if needed); `flush` waits for the broker."""
        if self._send(letter, self.max_bytes).value_truncated:
            self.truncated += 1
            log.warning(
                "dead letter for %s/%d@%d kept the first bytes of its %s-byte value only",
                letter.source_topic,
                letter.partition,
                letter.offset,
                letter.value_size,
            )
        self.sent += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker acknowledged every letter.

        Raises:
            KafkaError: a letter was not acknowledged (broker down, timeout); a letter the
                broker refuses as too large is resent at the smallest size instead.
        """
        self._settle(timeout_s, resend_too_large=True)
        if self._pending:  # letters resent at the smallest size: once, no further fallback
            self._settle(timeout_s, resend_too_large=False)

    def _settle(self, timeout_s: float, resend_too_large: bool) -> None:
        """Flush the producer and wait for every pending letter; a letter the broker refuses
        as too large is resent at the smallest size if `resend_too_large`, else raised."""
        self.producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        for letter, future in pending:
            try:
                future.get(timeout=timeout_s)
            except MessageSizeTooLargeError:
                if not resend_too_large:
                    raise
                # The broker's limit (max.message.bytes) is below ours: the bare minimum.
                self._send(letter, MIN_LETTER_BYTES)
                self.truncated += 1
