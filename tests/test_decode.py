"""The shared decode step, without a broker (the broker path is in test_dlq_broker.py)."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from kafka.errors import MessageSizeTooLargeError

from infra.config import DecodeSettings
from schemas import Impression
from streams.decode import DeadLetterWriter, Decoder
from streams.dlq import MIN_LETTER_BYTES, DeadLetter, Reason
from tests.helpers import LABEL_JSON

GOOD = {
    "impression_id": "i-1",
    "request_id": "r",
    "user_id": "u",
    "query": "抹茶",
    "pin_id": "p",
    "position": 2,
    "country": "JP",
    "locale": "ja-JP",
    "event_time": "2026-11-20T12:00:00Z",
}

BAD_INPUTS: list[tuple[bytes | None, Reason]] = [
    (b'{"impression_id": ', Reason.MALFORMED_JSON),
    (b"not json at all", Reason.MALFORMED_JSON),
    (
        json.dumps({**GOOD, "query": "café"}, ensure_ascii=False).encode("latin-1"),
        Reason.INVALID_UTF8,
    ),
    (json.dumps({k: v for k, v in GOOD.items() if k != "pin_id"}).encode(), Reason.MISSING_FIELD),
    (json.dumps({**GOOD, "position": "2"}).encode(), Reason.WRONG_TYPE),
    (json.dumps({**GOOD, "event_time": "yesterday"}).encode(), Reason.WRONG_TYPE),
    (json.dumps({**GOOD, "position": 0}).encode(), Reason.INVALID_VALUE),
    (json.dumps({**GOOD, "query": "x" * 300}).encode(), Reason.OVERSIZED_TEXT),
    (json.dumps({**GOOD, "pad": "y" * 5000}).encode(), Reason.OVERSIZED_RECORD),
    (None, Reason.EMPTY_VALUE),
    (b"", Reason.EMPTY_VALUE),
]


@pytest.fixture
def decoder() -> Decoder[Impression]:
    return Decoder("impressions", DecodeSettings(max_text_bytes=256, max_record_bytes=4096), "t")


def test_good_record_decodes(decoder: Decoder[Impression]) -> None:
    event = decoder.decode_bytes(json.dumps(GOOD).encode(), 0, 0)
    assert isinstance(event, Impression) and event.query == "抹茶"


@pytest.mark.parametrize(("value", "reason"), BAD_INPUTS)
def test_each_bad_input_becomes_a_dead_letter(
    decoder: Decoder[Impression], value: bytes | None, reason: Reason
) -> None:
    letter = decoder.decode_bytes(value, 3, 42, b"k")
    assert isinstance(letter, DeadLetter)
    assert letter.reason == reason, letter.detail
    assert (letter.source_topic, letter.partition, letter.offset) == ("impressions", 3, 42)
    assert letter.value == value  # the original bytes, untouched
    assert decoder.counters.by_reason() == {reason.value: 1}


def test_multibyte_text_limit_counts_bytes() -> None:
    decoder: Decoder[Impression] = Decoder("impressions", DecodeSettings(max_text_bytes=30), "t")
    ok = decoder.decode_bytes(json.dumps({**GOOD, "query": "抹" * 10}).encode(), 0, 0)
    too_big = decoder.decode_bytes(json.dumps({**GOOD, "query": "抹" * 11}).encode(), 0, 1)
    assert isinstance(ok, Impression)
    assert isinstance(too_big, DeadLetter) and too_big.reason == Reason.OVERSIZED_TEXT


# --- Poison records: each is refused with its reason and a line naming the field -------

NOW = datetime(2026, 11, 21, tzinfo=UTC)


def _with(**fields: Any) -> bytes:
    return json.dumps({**GOOD, **fields}).encode()


# (what, topic, value, reason, the start of the detail)
POISON: list[tuple[str, str, bytes, Reason, str]] = [
    ("position 2^63", "impressions", _with(position=2**63), Reason.INVALID_VALUE, "position:"),
    (
        "position -2^63-1",
        "impressions",
        _with(position=-(2**63) - 1),
        Reason.INVALID_VALUE,
        "position:",
    ),
    (
        "year 0001 east of UTC",
        "impressions",
        _with(event_time="0001-01-01T00:00:00+01:00"),
        Reason.INVALID_VALUE,
        "event_time: 0001-01-01T00:00:00+01:00 is outside years 1-9999",
    ),
    (
        "year 9999 west of UTC",
        "impressions",
        _with(event_time="9999-12-31T23:30:00-01:00"),
        Reason.INVALID_VALUE,
        "event_time: 9999-12-31T23:30:00-01:00 is outside years 1-9999",
    ),
    (
        "year 0001 in UTC",
        "impressions",
        _with(event_time="0001-01-01T00:00:00Z"),
        Reason.EVENT_TIME_OUT_OF_RANGE,
        "event_time: 0001-01-01T00:00:00+00:00 is",
    ),
    (
        "2099",
        "impressions",
        _with(event_time="2099-01-01T00:00:00Z"),
        Reason.EVENT_TIME_OUT_OF_RANGE,
        "event_time: 2099-01-01T00:00:00+00:00 is",
    ),
    (
        "1970",
        "impressions",
        _with(event_time="1970-01-01T00:00:00Z"),
        Reason.EVENT_TIME_OUT_OF_RANGE,
        "event_time: 1970-01-01T00:00:00+00:00 is",
    ),
    (
        "NUL in query",
        "impressions",
        _with(query="abc\x00def"),
        Reason.INVALID_VALUE,
        "query: control character U+0000 at index 3",
    ),
    (
        "ESC in locale",
        "impressions",
        _with(locale="en\x1b[31m"),
        Reason.INVALID_VALUE,
        "locale: control",
    ),
    (
        "empty impression_id",
        "impressions",
        _with(impression_id=""),
        Reason.INVALID_VALUE,
        "impression_id: empty",
    ),
    ("blank user_id", "impressions", _with(user_id="  "), Reason.INVALID_VALUE, "user_id: blank"),
    (
        "newline in pin_id",
        "impressions",
        _with(pin_id="p\n1"),
        Reason.INVALID_VALUE,
        "pin_id: control",
    ),
    (
        "NaN probability",
        "labels",
        json.dumps(LABEL_JSON).replace("0.1", "NaN").encode(),
        Reason.INVALID_VALUE,
        "probs.0: Input should be a finite number",
    ),
    (
        "infinite score",
        "labels",
        json.dumps(LABEL_JSON).replace("2.0", "1e999").encode(),
        Reason.INVALID_VALUE,
        "score: Input should be a finite number",
    ),
    (
        "empty teacher_version",
        "labels",
        json.dumps({**LABEL_JSON, "teacher_version": ""}).encode(),
        Reason.INVALID_VALUE,
        "teacher_version: empty",
    ),
    (
        "label dated 2099",
        "labels",
        json.dumps({**LABEL_JSON, "labeled_at": "2099-01-01T00:00:00Z"}).encode(),
        Reason.EVENT_TIME_OUT_OF_RANGE,
        "labeled_at: 2099",
    ),
]


def _pinned(topic: str, **limits: Any) -> Decoder[Any]:
    return Decoder(topic, DecodeSettings(**limits), "t", clock=lambda: NOW)


@pytest.mark.parametrize(
    ("what", "topic", "value", "reason", "detail"), POISON, ids=[p[0] for p in POISON]
)
def test_each_poison_record_becomes_one_dead_letter(
    what: str, topic: str, value: bytes, reason: Reason, detail: str
) -> None:
    decoder = _pinned(topic)
    letter = decoder.decode_bytes(value, 5, 7, b"k")
    assert isinstance(letter, DeadLetter), what
    assert letter.reason == reason, letter.detail
    assert letter.detail.startswith(detail), letter.detail
    assert "\n" not in letter.detail  # one line
    back = DeadLetter.model_validate_json(letter.to_bytes())
    assert back == letter and back.value == value and not back.value_truncated
    assert back.value_size == len(value)
    assert back.value_sha256 == hashlib.sha256(value).hexdigest()


def test_event_time_window_edges() -> None:
    decoder = _pinned("impressions")
    limits = decoder.limits

    def at(when: datetime) -> object:
        return decoder.decode_bytes(_with(event_time=when.isoformat()), 0, 0)

    assert isinstance(at(NOW + timedelta(seconds=limits.max_future_s)), Impression)
    assert isinstance(at(NOW - timedelta(days=limits.max_age_days)), Impression)
    late = at(NOW + timedelta(seconds=limits.max_future_s + 2))
    old = at(NOW - timedelta(days=limits.max_age_days, seconds=2))
    assert isinstance(late, DeadLetter) and late.reason == Reason.EVENT_TIME_OUT_OF_RANGE
    assert isinstance(old, DeadLetter) and old.reason == Reason.EVENT_TIME_OUT_OF_RANGE
    assert "decode.max_future_s" in late.detail and "decode.max_age_days" in old.detail
    # Replays of older history widen the window; an absurd width does not overflow.
    wide = _pinned("impressions", max_age_days=10**9, max_future_s=10**15)
    for when in ("0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z"):
        assert isinstance(wide.decode_bytes(_with(event_time=when), 0, 0), Impression)


def test_the_generated_world_and_fixed_test_dates_are_inside_the_default_window() -> None:
    from infra.config import GeneratorSettings

    start = GeneratorSettings().start
    decoder: Decoder[Impression] = Decoder("impressions", DecodeSettings(), "t")
    for when in (start, start + timedelta(days=GeneratorSettings().sim_days), NOW):
        assert isinstance(
            decoder.decode_bytes(_with(event_time=when.isoformat()), 0, 0), Impression
        )


def test_tab_newline_and_cr_are_text() -> None:
    event = _pinned("impressions").decode_bytes(_with(query="a\tb\nc\r\n"), 0, 0)
    assert isinstance(event, Impression) and event.query == "a\tb\nc\r\n"


def test_a_check_that_breaks_is_a_refusal_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object, **__: object) -> None:
        raise OverflowError("date value out of range")

    monkeypatch.setattr(Impression, "model_validate_json", boom)
    letter = _pinned("impressions").decode_bytes(json.dumps(GOOD).encode(), 0, 0)
    assert isinstance(letter, DeadLetter) and letter.reason == Reason.INVALID_VALUE
    assert "OverflowError: date value out of range" in letter.detail


# --- Dead letters always fit ------------------------------------------------------------


def _letter(value: bytes, key: bytes | None = b"k", detail: str = "query: too long") -> DeadLetter:
    return DeadLetter.of(
        topic="impressions",
        partition=3,
        offset=1234,
        key=key,
        value=value,
        reason=Reason.OVERSIZED_TEXT,
        detail=detail,
        consumer="sink",
    )


def test_a_750_kb_record_is_dead_lettered_within_the_limit() -> None:
    value = _with(query="x" * 750_000)
    letter = _pinned("impressions").decode_bytes(value, 3, 1234, b"k")
    assert isinstance(letter, DeadLetter) and letter.reason == Reason.OVERSIZED_TEXT
    limit = DecodeSettings().max_dead_letter_bytes
    assert len(letter.to_bytes()) > 1_000_000  # base64 + metadata: over the request size
    fitted = letter.fitted(limit)
    wire = fitted.to_bytes()
    assert len(wire) <= limit and len(wire) > limit - 8
    back = DeadLetter.model_validate_json(wire)
    assert back.value_truncated and back.value_size == len(value)
    assert back.value_sha256 == hashlib.sha256(value).hexdigest()
    assert back.value is not None and value.startswith(back.value) and len(back.value) > 600_000
    assert (back.source_topic, back.partition, back.offset) == ("impressions", 3, 1234)
    assert (back.reason, back.detail, back.key) == (letter.reason, letter.detail, b"k")
    # Fitted again smaller (the broker refused it): the original's size and hash stay.
    smaller = back.fitted(MIN_LETTER_BYTES)
    assert len(smaller.to_bytes()) <= MIN_LETTER_BYTES
    assert (smaller.value_size, smaller.value_sha256) == (back.value_size, back.value_sha256)


def test_fitting_caps_huge_keys_and_details_too() -> None:
    letter = _letter(b"v" * 50_000, key=b"K" * 100_000, detail="\x00" * 5000)
    fitted = letter.fitted(MIN_LETTER_BYTES)
    assert len(fitted.to_bytes()) <= MIN_LETTER_BYTES
    assert fitted.key_truncated and fitted.key_size == 100_000 and fitted.key == b"K" * 1024
    assert fitted.value_truncated and fitted.value_size == 50_000
    small = _letter(b"v" * 100)
    assert small.fitted(MIN_LETTER_BYTES) is small
    with pytest.raises(ValueError, match="decode.max_dead_letter_bytes"):
        small.fitted(100)


def test_letters_from_before_these_fields_and_from_flink_still_read() -> None:
    old = {
        "source_topic": "impressions",
        "partition": 0,
        "offset": 1,
        "reason": "malformed_json",
        "detail": "x",
        "key_b64": None,
        "value_b64": base64.b64encode(b"{").decode(),
        "consumer": "sink",
        "failed_at": "2026-11-20T12:00:00Z",
    }
    flink = {**old, "dlq_key": "k", "reason": "late_event", "failed_at": "2026-11-20 12:00:00.000"}
    for raw in (old, flink):
        letter = DeadLetter.model_validate_json(json.dumps(raw))
        assert letter.value == b"{" and not letter.value_truncated and letter.value_size is None


class _Future:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class _Producer:
    """Records what is sent; refuses values over `broker_max` as the broker would."""

    def __init__(self, max_request_size: int = 1_048_576, broker_max: int = 10**9) -> None:
        self.config = {"max_request_size": max_request_size}
        self.broker_max = broker_max
        self.sent: list[bytes] = []

    def send(self, topic: str, key: bytes, value: bytes) -> _Future:
        assert topic == "impressions.dlq"
        if len(value) > self.config["max_request_size"]:
            raise MessageSizeTooLargeError(f"{len(value)} bytes")
        self.sent.append(value)
        return _Future(MessageSizeTooLargeError() if len(value) > self.broker_max else None)

    def flush(self, timeout: float) -> None:
        return None


def test_the_writer_never_fails_for_a_letters_size() -> None:
    big = _letter(b"x" * 2_000_000)
    # Capped by the producer's request size, whatever the configured limit says.
    prod = _Producer(max_request_size=300_000)
    writer = DeadLetterWriter(prod, max_bytes=5_000_000)  # type: ignore[arg-type]
    assert writer.max_bytes < 300_000
    writer.send(big)
    writer.flush()
    assert len(prod.sent) == 1 and len(prod.sent[0]) <= writer.max_bytes
    assert writer.truncated == 1
    # The broker's own limit is lower still: resent at the minimum, once.
    prod = _Producer(broker_max=100_000)
    writer = DeadLetterWriter(prod)  # type: ignore[arg-type]
    writer.send(big)
    writer.send(_letter(b"small"))
    writer.flush()
    letters = [DeadLetter.model_validate_json(v) for v in prod.sent]
    assert [len(v) <= MIN_LETTER_BYTES for v in prod.sent] == [False, True, True]
    assert letters[2].value_size == 2_000_000 and letters[2].value_truncated
    assert letters[1].value == b"small"
