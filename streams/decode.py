"""The one decode step every consumer uses: bytes in, a typed event or a dead letter out.

Nothing is dropped: each record either validates against its topic's model or becomes a
`DeadLetter` that keeps the original bytes, its source topic/partition/offset and the reason,
and is written to `<topic>.dlq` by `DeadLetterWriter`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from kafka import KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from pydantic import ValidationError

from infra.config import DecodeSettings
from schemas.base import Event
from schemas.topics import dlq_topic, model_for_topic
from streams.dlq import DeadLetter, DeadLetterCounters, Reason

E = TypeVar("E", bound=Event)

_VALUE_ERRORS = {"literal_error", "greater_than_equal", "greater_than", "less_than", "enum"}


def _reason_for(error: ValidationError) -> tuple[Reason, str]:
    first = error.errors(include_url=False)[0]
    kind = first["type"]
    where = ".".join(str(p) for p in first["loc"]) or "(record)"
    detail = f"{where}: {first['msg']}"
    if kind == "json_invalid":
        return Reason.MALFORMED_JSON, detail
    if kind == "missing":
        return Reason.MISSING_FIELD, detail
    if kind in _VALUE_ERRORS:
        return Reason.INVALID_VALUE, detail
    return Reason.WRONG_TYPE, detail


def _oversized(event: Event, limit: int) -> str | None:
    for name, value in event:
        texts: Iterable[Any] = value if isinstance(value, list) else (value,)
        for text in texts:
            if isinstance(text, str) and (size := len(text.encode("utf-8"))) > limit:
                return f"{name}: {size} bytes of text, limit {limit} (decode.max_text_bytes)"
    return None


class Rejected(Exception):
    """Internal: carries the reason a record was refused."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse(model: type[E], value: bytes | None, limits: DecodeSettings) -> E:
    """Validate one record's bytes against `model`, raising `Rejected` with the reason."""
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
    if (problem := _oversized(event, limits.max_text_bytes)) is not None:
        raise Rejected(Reason.OVERSIZED_TEXT, problem)
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
    ) -> None:
        self.topic = topic
        self.model: type[Any] = model or model_for_topic(topic)
        self.limits = limits
        self.consumer_name = consumer_name
        self.counters = counters or DeadLetterCounters()

    def decode(self, record: ConsumerRecord) -> E | DeadLetter:
        return self.decode_bytes(record.value, record.partition, record.offset, record.key)

    def decode_bytes(
        self, value: bytes | None, partition: int, offset: int, key: bytes | None = None
    ) -> E | DeadLetter:
        try:
            event: E = parse(self.model, value, self.limits)
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


class DeadLetterWriter:
    """Sends dead letters to `<topic>.dlq`; `flush()` before committing source offsets."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self.sent = 0
        self._pending: list[Any] = []

    def send(self, letter: DeadLetter) -> None:
        self._pending.append(
            self.producer.send(
                dlq_topic(letter.source_topic),
                key=f"{letter.source_topic}/{letter.partition}/{letter.offset}".encode(),
                value=letter.to_bytes(),
            )
        )
        self.sent += 1

    def flush(self, timeout_s: float = 30.0) -> None:
        """Wait until the broker acknowledged every letter; raises if any was not."""
        self.producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        for future in pending:
            future.get(timeout=timeout_s)
