"""The shared decode step, without a broker (the broker path is in test_dlq_broker.py)."""

from __future__ import annotations

import json

import pytest

from infra.config import DecodeSettings
from schemas import Impression
from streams.decode import Decoder
from streams.dlq import DeadLetter, Reason

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
    decoder = Decoder("impressions", DecodeSettings(max_text_bytes=30), "t")
    ok = decoder.decode_bytes(json.dumps({**GOOD, "query": "抹" * 10}).encode(), 0, 0)
    too_big = decoder.decode_bytes(json.dumps({**GOOD, "query": "抹" * 11}).encode(), 0, 1)
    assert isinstance(ok, Impression)
    assert isinstance(too_big, DeadLetter) and too_big.reason == Reason.OVERSIZED_TEXT
