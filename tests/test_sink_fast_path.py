"""The sink's bulk decode (streams/fast_decode.py) against the strict pydantic path.

Every record goes through both: `Decoder.decode_bytes` one at a time (strict) and
`Decoder.decode_rows` over the whole list (fast, strict only for what it cannot vouch for).
They must agree exactly: the same records refused with the same reason and detail, and the
same accepted rows, compared as Arrow tables in the table's own types. The inputs are every
bad-input kind the decode and poison tests produce, edge cases of each JSON type and time
format, realistic records of every topic from the world generator, and seeded mutations of
those records (a field swapped for a tricky value, removed, repeated or joined by another).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from infra.config import DecodeSettings, GeneratorSettings
from quality.samples import enriched_impressions, labels
from schemas import Event
from schemas.iceberg import iceberg_schema, table_entry
from schemas.topics import model_for_topic
from streams.arrow_rows import model_columns
from streams.decode import FAST_MIN_RECORDS, Decoder
from streams.dlq import DeadLetter, Reason
from streams.fast_decode import FastDecoder, Unsupported, model_fields, re2_pattern
from streams.generator.run import generate_events
from tests.helpers import LABEL_JSON as LABEL
from tests.test_decode import BAD_INPUTS, GOOD, NOW, POISON

TOPICS = ("impressions", "impressions.enriched", "labels", "engagements", "pin_content")


def _schema(topic: str) -> pa.Schema:
    return iceberg_schema(table_entry(model_for_topic(topic).table)).as_arrow()


def _decoder(topic: str, now: datetime, **limits: Any) -> Decoder[Any]:
    decoder: Decoder[Any] = Decoder(topic, DecodeSettings(**limits), "t", clock=lambda: now)
    decoder.use_columns(_schema(topic))
    return decoder


def _letter(letter: DeadLetter) -> tuple[Any, ...]:
    return (letter.offset, letter.reason, letter.detail, letter.value, letter.key)


def both_paths(
    topic: str, values: Sequence[bytes | None], now: datetime = NOW, **limits: Any
) -> tuple[pa.RecordBatch, list[tuple[Any, ...]]]:
    """Decode `values` both ways; assert they agree; return the rows and dead letters."""
    strict = _decoder(topic, now, **limits)
    events: list[Event] = []
    letters = []
    for offset, value in enumerate(values):
        decoded = strict.decode_bytes(value, 0, offset, b"k")
        if isinstance(decoded, DeadLetter):
            letters.append(_letter(decoded))
        else:
            events.append(decoded)
    fast = _decoder(topic, now, **limits)
    got = fast.decode_rows(
        values, [0] * len(values), list(range(len(values))), [b"k"] * len(values)
    )
    assert [_letter(d) for d in got.letters] == letters
    expected = model_columns(fast.columns, events)
    assert got.rows.schema == expected.schema
    assert got.rows.equals(expected), _first_difference(got.rows, expected)
    assert fast.counters.by_reason() == strict.counters.by_reason()
    return got.rows, letters


def _first_difference(got: pa.RecordBatch, expected: pa.RecordBatch) -> str:
    if got.num_rows != expected.num_rows:
        return f"{got.num_rows} rows, expected {expected.num_rows}"
    for name in got.schema.names:
        a, b = got.column(name).to_pylist(), expected.column(name).to_pylist()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                return f"row {i} {name}: {x!r} != {y!r}"
    return "metadata differs"


def _padded(values: Sequence[bytes | None], good: bytes) -> list[bytes | None]:
    """Enough good records around `values` for the columnar path to run."""
    return [good] * FAST_MIN_RECORDS + list(values) + [good] * 3


def _with(record: dict[str, Any], **fields: Any) -> bytes:
    return json.dumps({**record, **fields}, ensure_ascii=False).encode()


# Edge cases of each kind of field, as JSON text (so NaN, duplicates and escapes survive).
EDGES: list[tuple[str, bytes]] = [
    ("null required id", _with(GOOD, pin_id=None)),
    ("null required text", _with(GOOD, query=None)),
    ("null required time", _with(GOOD, event_time=None)),
    ("int as text", _with(GOOD, query=1)),
    ("bool as int", _with(GOOD, position=True)),
    ("float as int", _with(GOOD, position=2.0)),
    (
        "exponent int",
        b'{"impression_id":"i","request_id":"r","user_id":"u","query":"q",'
        b'"pin_id":"p","position":1e2,"country":"c","locale":"l","event_time":"2026-11-20T12:00:00Z"}',
    ),
    ("position 2^63-1", _with(GOOD, position=2**63 - 1)),
    ("position -1", _with(GOOD, position=-1)),
    ("position 2^70", _with(GOOD, position=2**70)),
    ("list as id", _with(GOOD, pin_id=["p"])),
    ("object as text", _with(GOOD, query={"q": 1})),
    ("extra field", _with(GOOD, extra={"deep": [1, 2, {"x": None}]})),
    ("duplicate key, last wins", _with(GOOD)[:-1] + b', "position": 3}'),
    ("duplicate key, last bad", _with(GOOD)[:-1] + b', "position": "3"}'),
    ("escaped key", _with(GOOD).replace(b'"query"', b'"qu\\u0065ry"')),
    ("escaped value", _with(GOOD, query='caf\u00e9 \U0001f600 \\ " /')),
    ("lone surrogate", _with(GOOD).replace("抹茶".encode(), b"\\ud800")),
    ("surrogate pair", _with(GOOD).replace("抹茶".encode(), b"\\ud83d\\ude00")),
    ("invalid UTF-8 in an unknown field", _with(GOOD)[:-1] + b', "x": "\xff"}'),
    ("invalid UTF-8 in a value", _with(GOOD, query="Z").replace(b'"Z"', b'"\xc3"')),
    (
        "deep nesting in an unknown field",
        _with(GOOD)[:-1] + b', "x": ' + b"[" * 300 + b"]" * 300 + b"}",
    ),
    ("nesting within limits", _with(GOOD)[:-1] + b', "x": ' + b"[" * 20 + b"]" * 20 + b"}"),
    ("NaN in an unknown field", _with(GOOD)[:-1] + b', "x": NaN}'),
    ("trailing garbage", _with(GOOD) + b" x"),
    ("two records in one", _with(GOOD) + b"," + _with(GOOD)),
    ("BOM", b"\xef\xbb\xbf" + _with(GOOD)),
    ("whitespace around", b" \n" + _with(GOOD) + b"\r\n "),
    ("array, not object", b"[" + _with(GOOD) + b"]"),
    ("bare string", b'"x"'),
    ("ideographic space id", _with(GOOD, user_id="\u3000")),
    ("no-break space id", _with(GOOD, user_id="\u00a0")),
    ("NEL id", _with(GOOD, user_id="\u0085")),
    ("line separator id", _with(GOOD, user_id="\u2028")),
    ("space then letter id", _with(GOOD, user_id="\u3000x")),
    ("id with inner space", _with(GOOD, user_id="a b")),
    ("id with trailing newline", _with(GOOD, user_id="ab\n")),
    ("text with trailing newline", _with(GOOD, query="ab\n")),
    ("text with DEL and C1", _with(GOOD, query="a\x7f\x85\x9f")),
    ("text with VT", _with(GOOD, query="a\x0bb")),
    ("id of 256 chars", _with(GOOD, pin_id="é" * 256)),
    ("id of 257 chars", _with(GOOD, pin_id="é" * 257)),
    ("empty text", _with(GOOD, query="")),
    ("time with space", _with(GOOD, event_time="2026-11-20 12:00:00Z")),
    ("time lowercase", _with(GOOD, event_time="2026-11-20t12:00:00z")),
    ("time 7 digits", _with(GOOD, event_time="2026-11-20T12:00:00.1234567Z")),
    ("time 1 digit", _with(GOOD, event_time="2026-11-20T12:00:00.5Z")),
    ("time leap second", _with(GOOD, event_time="2026-11-20T23:59:60Z")),
    ("time 24:00", _with(GOOD, event_time="2026-11-20T24:00:00Z")),
    ("time Feb 29 2026", _with(GOOD, event_time="2026-02-29T00:00:00Z")),
    ("time Feb 29 2024", _with(GOOD, event_time="2024-02-29T00:00:00Z")),
    ("time +23:59", _with(GOOD, event_time="2026-11-20T12:00:00+23:59")),
    ("time -00:00", _with(GOOD, event_time="2026-11-20T12:00:00-00:00")),
    ("time +0530", _with(GOOD, event_time="2026-11-20T12:00:00+0530")),
    ("time +05", _with(GOOD, event_time="2026-11-20T12:00:00+05")),
    ("time +24:00", _with(GOOD, event_time="2026-11-20T12:00:00+24:00")),
    ("naive time", _with(GOOD, event_time="2026-11-20T12:00:00")),
    ("time without seconds", _with(GOOD, event_time="2026-11-20T12:00Z")),
    ("date only", _with(GOOD, event_time="2026-11-20")),
    ("unix seconds", _with(GOOD, event_time=1795000000)),
    ("unix seconds as text", _with(GOOD, event_time="1795000000")),
    ("year 0000", _with(GOOD, event_time="0000-01-01T00:00:00Z")),
    ("year 10000", _with(GOOD, event_time="10000-01-01T00:00:00Z")),
    ("time at the window's far edge", _with(GOOD, event_time="2026-11-21T00:05:00Z")),
    ("time past the window's far edge", _with(GOOD, event_time="2026-11-21T00:05:00.000001Z")),
]

LABEL_EDGES: list[tuple[str, bytes]] = [
    ("int probability", _with(LABEL, probs=[0, 1, 0, 0])),
    ("huge int score", _with(LABEL, score=10**30)),
    ("negative zero", _with(LABEL, score=-0.0)),
    ("subnormal", _with(LABEL, score=5e-324)),
    ("overflowing score", json.dumps(LABEL).replace("2.0", "1e400").encode()),
    ("-Infinity", json.dumps(LABEL).replace("2.0", "-Infinity").encode()),
    ("text probability", _with(LABEL, probs=["0.5"])),
    ("null probability", _with(LABEL, probs=[0.5, None])),
    ("empty probs", _with(LABEL, probs=[])),
    ("probs not a list", _with(LABEL, probs=0.5)),
    ("label_scale 1", _with(LABEL, label_scale=1)),
    ("impression_time null", _with(LABEL, impression_time=None)),
    ("impression_time odd zone", _with(LABEL, impression_time="2026-11-20T12:00:00.25-03:30")),
    ("impression_time year 1 east", _with(LABEL, impression_time="0001-01-01T00:30:00+01:00")),
    ("impression_time 1970", _with(LABEL, impression_time="1970-01-01T00:00:00Z")),
]

ENGAGEMENT = {
    "impression_id": "i-1",
    "query": "q",
    "pin_id": "p",
    "action": "click",
    "event_time": "2026-11-20T12:00:00Z",
}


def test_every_bad_input_of_the_decode_and_poison_tests_gets_the_same_letter() -> None:
    good = _with(GOOD)
    values = [v for v, _ in BAD_INPUTS]
    limits: dict[str, Any] = {"max_text_bytes": 256, "max_record_bytes": 4096}
    _, letters = both_paths("impressions", _padded(values, good), **limits)
    assert [reason for _, reason, *_ in letters] == [r for _, r in BAD_INPUTS]
    for topic in ("impressions", "labels"):
        poison = [(what, value) for what, t, value, _, _ in POISON if t == topic]
        good = _with(GOOD) if topic == "impressions" else _with(LABEL)
        _, letters = both_paths(topic, _padded([v for _, v in poison], good))
        assert len(letters) == len(poison)


@pytest.mark.parametrize(("what", "value"), EDGES, ids=[e[0] for e in EDGES])
def test_impression_edge_cases_agree(what: str, value: bytes) -> None:
    both_paths("impressions", _padded([value], _with(GOOD)))


@pytest.mark.parametrize(("what", "value"), LABEL_EDGES, ids=[e[0] for e in LABEL_EDGES])
def test_label_edge_cases_agree(what: str, value: bytes) -> None:
    both_paths("labels", _padded([value], _with(LABEL)))


def test_a_bad_enum_and_each_action_agree() -> None:
    values = [_with(ENGAGEMENT, action=a) for a in ("click", "save", "closeup", "long_click")]
    values += [_with(ENGAGEMENT, action=a) for a in ("Click", "", "tap", 1, None)]
    _, letters = both_paths("engagements", _padded(values, _with(ENGAGEMENT)))
    assert len(letters) == 5


def test_a_wide_window_and_the_years_datetime_holds_agree() -> None:
    values = [
        _with(GOOD, event_time=t)
        for t in (
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:59:59.999999+01:00",
            "0001-01-01T01:00:00+01:00",
            "9999-12-31T23:59:59.999999Z",
            "9999-12-31T22:59:59.999999-01:00",
            "9999-12-31T23:30:00-01:00",
        )
    ]
    rows, letters = both_paths(
        "impressions", _padded(values, _with(GOOD)), max_age_days=10**9, max_future_s=10**15
    )
    assert len(letters) == 2


def _world(topic: str, n: int) -> tuple[list[bytes], datetime]:
    """Realistic records of `topic` from the generators, and a clock just after them."""
    if topic == "impressions.enriched":
        events: list[Event] = list(enriched_impressions(n, NOW, seed=3))
    elif topic == "labels":
        events = list(labels(n, NOW, seed=3))
    else:
        settings = GeneratorSettings(impressions=400, pins=150, users=100, sim_days=2, seed=11)
        model = model_for_topic(topic)
        events = [e for e in generate_events(settings) if isinstance(e, model)][:n]
    assert len(events) >= FAST_MIN_RECORDS, topic
    latest = max(e.time for e in events)
    return [e.to_bytes() for e in events], latest + timedelta(seconds=1)


@pytest.mark.parametrize("topic", TOPICS)
def test_realistic_records_are_vouched_for_and_give_the_strict_rows(topic: str) -> None:
    values, now = _world(topic, 300)
    rows, letters = both_paths(topic, values, now=now)
    assert letters == [] and rows.num_rows == len(values)
    # The fast path did the work: it vouched for every one of them itself.
    fast = FastDecoder(model_for_topic(topic), _schema(topic), DecodeSettings().max_text_bytes)
    vouched = fast.vouch(values, (-(2**62), 2**62))
    assert vouched.strict == [] and vouched.rows.equals(rows)


TRICKY: list[Any] = [
    "",
    " ",
    "\u3000",
    "\u00a0x",
    "a\x00",
    "a\nb",
    "x" * 300,
    "é" * 257,
    "\U0001f600",
    0,
    -1,
    1,
    2**63,
    2**31,
    1.0,
    1.5,
    "1",
    True,
    None,
    [],
    ["a"],
    ["a", None],
    [1],
    {"a": 1},
    "2026-11-20 12:00:00Z",
    "2026-11-20T12:00:00.1234567Z",
    "2026-11-20T12:00:00.123+02:00",
    "2026-02-30T00:00:00Z",
    "2026-11-20T12:00:00",
    "0001-01-01T00:00:00+01:00",
    "2099-01-01T00:00:00Z",
]


def _mutations(values: list[bytes], rng: random.Random, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        record = json.loads(rng.choice(values))
        name = rng.choice(sorted(record))
        move = rng.random()
        if move < 0.7:
            record[name] = rng.choice(TRICKY)
        elif move < 0.8:
            del record[name]
        elif move < 0.9:
            record["unknown_" + name] = rng.choice(TRICKY)
        text = json.dumps(record, ensure_ascii=rng.random() < 0.5).encode()
        if move >= 0.9:  # the field again at the end: the last one wins
            text = text[:-1] + b", " + json.dumps(name).encode() + b": "
            text += json.dumps(rng.choice(TRICKY)).encode() + b"}"
        out.append(text)
    return out


@pytest.mark.parametrize("topic", TOPICS)
def test_seeded_mutations_of_realistic_records_agree(topic: str) -> None:
    values, now = _world(topic, 200)
    rng = random.Random(f"fast-path-{topic}")
    mixed = values + _mutations(values, rng, 400)
    rng.shuffle(mixed)
    rows, letters = both_paths(topic, mixed, now=now)
    assert letters and rows.num_rows > len(values) // 2  # both kinds were exercised


def test_the_fast_decoder_mirrors_the_models_and_refuses_what_it_cannot() -> None:
    fields = {f.name: f for f in model_fields(model_for_topic("labels"))}
    assert fields["probs"].is_list and fields["probs"].finite
    assert fields["label_scale"].ge == 2 and fields["impression_time"].optional
    assert fields["labeled_at"].kind == "time"
    # \s widened to Unicode white space, only inside a negated class.
    assert re2_pattern(r"^[^\x00-\x1f\s]+$", "m.f") == r"^[^\x00-\x1f\s\p{Z}\x{85}]+$"
    for pattern in (r"^\s+$", r"^\d+$", r"^(a|b)$", r"^a.b$"):
        with pytest.raises(Unsupported):
            re2_pattern(pattern, "m.f")
    # A model with a field the fast path cannot mirror is decoded strictly, whole.
    from pydantic import field_validator

    class Odd(model_for_topic("impressions")):  # type: ignore[misc,valid-type]
        @field_validator("query")
        @classmethod
        def lower(cls, value: str) -> str:
            return value.lower()

    assert FastDecoder.for_model(Odd, _schema("impressions"), 1000) is None
    decoder: Decoder[Any] = Decoder("impressions", DecodeSettings(), "t", Odd, clock=lambda: NOW)
    decoder.use_columns(_schema("impressions"))
    values = _padded([_with(GOOD, query="LOUD")], _with(GOOD))
    got = decoder.decode_rows(
        values, [0] * len(values), list(range(len(values))), [None] * len(values)
    )
    assert got.rows.column("query").to_pylist()[FAST_MIN_RECORDS] == "loud"


def test_a_table_whose_columns_are_in_another_order_gets_its_own_order() -> None:
    schema = _schema("impressions")
    shuffled = pa.schema(list(reversed(list(schema))))
    decoder: Decoder[Any] = Decoder("impressions", DecodeSettings(), "t", clock=lambda: NOW)
    decoder.use_columns(shuffled)
    values = _padded([_with(GOOD, position="2")], _with(GOOD))  # one strict, the rest fast
    n = len(values)
    got = decoder.decode_rows(values, [0] * n, list(range(n)), [None] * n)
    names = [f.name for f in shuffled if not f.name.startswith("_")]
    assert got.rows.schema.names == names and got.rows.num_rows == n - 1


def test_reasons_cover_every_kind_of_refusal_of_the_decode_step() -> None:
    """The comparisons above include every reason the shared decode step gives (late
    events are Flink's, scoring failures the labeler's)."""
    cases = [v for v, _ in BAD_INPUTS] + [v for _, v in EDGES]
    limits: dict[str, Any] = {"max_text_bytes": 256, "max_record_bytes": 4096}
    _, letters = both_paths("impressions", _padded(cases, _with(GOOD)), **limits)
    seen = {reason for _, reason, *_ in letters}
    assert seen == set(Reason) - {Reason.LATE_EVENT, Reason.SCORING_FAILED}
