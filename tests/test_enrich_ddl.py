"""The enrichment job's SQL follows the models (streams/enrich/ddl.py), server-free.

The fragments below are the hand-written SQL the templates held before the generation
(streams/enrich/sql/*.sql at ccd8db3): the rendered job must contain each of them, modulo
whitespace and identifier quoting, so generating them changed nothing. The deliberate
differences, all so that Flink refuses what the decode step refuses
(tests/test_enrich_verdict.py): `position` is a long in the model and in Iceberg, and the
hand-written INT made Flink skip a position in [2^31, 2^63) that the decode step accepts,
so it is BIGINT now; the source reads each value as text and types the same columns from
it in a view (a field of the wrong JSON type is refused, not coerced); and the validity
filters also check strings as the model does (an id not blank and without control
characters, text without C0 controls, at most decode.max_text_bytes).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import pytest
from pydantic import Field, create_model

from infra.config import Settings
from schemas import EnrichedImpression, Event, Impression
from schemas.base import ID_PATTERN, LONG_MAX, TEXT_PATTERN, Text
from streams.enrich import ddl
from streams.enrich.sql import TS_FORMAT, render

SOURCE_COLUMNS = """
  kafka_key STRING,
  impression_id STRING, request_id STRING, user_id STRING, `query` STRING, pin_id STRING,
  `position` BIGINT, country STRING, locale STRING, event_time TIMESTAMP_LTZ(6),
  title STRING, description STRING, link_title STRING, link_description STRING,
  updated_at TIMESTAMP_LTZ(6), caption STRING, captioner_version STRING,
  created_at TIMESTAMP_LTZ(6), board_id STRING, board_title STRING, action STRING,
  kafka_topic STRING METADATA FROM 'topic' VIRTUAL,"""

SINK_COLUMNS = """CREATE TEMPORARY TABLE enriched_sink (
  impression_id STRING, request_id STRING, user_id STRING, `query` STRING, pin_id STRING,
  `position` BIGINT, country STRING, locale STRING, event_time STRING, title STRING,
  description STRING, link_title STRING, link_description STRING, content_updated_at STRING,
  caption STRING, caption_updated_at STRING, board_titles ARRAY<STRING>,
  boards_updated_at STRING, top_queries ARRAY<STRING>, top_queries_updated_at STRING,
  enriched_at STRING
) WITH ("""

VALIDITY = {
    "impressions": """WHERE kafka_topic = 'impressions'
  AND impression_id IS NOT NULL AND request_id IS NOT NULL AND user_id IS NOT NULL
  AND `query` IS NOT NULL AND pin_id IS NOT NULL AND `position` >= 1
  AND country IS NOT NULL AND locale IS NOT NULL AND event_time IS NOT NULL""",
    "pin_content": """WHERE kafka_topic = 'pin_content' AND pin_id IS NOT NULL
  AND updated_at IS NOT NULL""",
    "pin_captions": """WHERE kafka_topic = 'pin_captions' AND pin_id IS NOT NULL
  AND caption IS NOT NULL AND captioner_version IS NOT NULL AND created_at IS NOT NULL""",
    "board_saves": """WHERE kafka_topic = 'board_saves' AND pin_id IS NOT NULL
  AND board_id IS NOT NULL AND board_title IS NOT NULL AND user_id IS NOT NULL
  AND event_time IS NOT NULL""",
    "engagements": """WHERE kafka_topic = 'engagements' AND impression_id IS NOT NULL
  AND `query` IS NOT NULL AND pin_id IS NOT NULL
  AND action IN ('click', 'save', 'closeup', 'long_click') AND event_time IS NOT NULL""",
}

DLQ_VALUES = {
    "impressions": """TO_BASE64(JSON_OBJECT(
    KEY 'impression_id' VALUE impression_id, KEY 'request_id' VALUE request_id,
    KEY 'user_id' VALUE user_id, KEY 'query' VALUE `query`, KEY 'pin_id' VALUE pin_id,
    KEY 'position' VALUE `position`, KEY 'country' VALUE country, KEY 'locale' VALUE locale,
    KEY 'event_time' VALUE DATE_FORMAT(event_time, ${ts_format}) NULL ON NULL))""",
    "pin_content": """TO_BASE64(JSON_OBJECT(
    KEY 'pin_id' VALUE pin_id, KEY 'title' VALUE title, KEY 'description' VALUE description,
    KEY 'link_title' VALUE link_title, KEY 'link_description' VALUE link_description,
    KEY 'updated_at' VALUE DATE_FORMAT(updated_at, ${ts_format}) NULL ON NULL))""",
    "pin_captions": """TO_BASE64(JSON_OBJECT(
    KEY 'pin_id' VALUE pin_id, KEY 'caption' VALUE caption,
    KEY 'captioner_version' VALUE captioner_version,
    KEY 'created_at' VALUE DATE_FORMAT(created_at, ${ts_format}) NULL ON NULL))""",
    "board_saves": """TO_BASE64(JSON_OBJECT(
    KEY 'pin_id' VALUE pin_id, KEY 'board_id' VALUE board_id,
    KEY 'board_title' VALUE board_title, KEY 'user_id' VALUE user_id,
    KEY 'event_time' VALUE DATE_FORMAT(event_time, ${ts_format}) NULL ON NULL))""",
    "engagements": """TO_BASE64(JSON_OBJECT(
    KEY 'impression_id' VALUE impression_id, KEY 'query' VALUE `query`,
    KEY 'pin_id' VALUE pin_id, KEY 'action' VALUE action,
    KEY 'event_time' VALUE DATE_FORMAT(event_time, ${ts_format}) NULL ON NULL))""",
}

PASSTHROUGH = (
    """INSERT INTO enriched_sink SELECT
  impression_id, request_id, user_id, `query`, pin_id, `position`, country, locale,
  DATE_FORMAT(event_time, ${ts_format}),
  content.title,""",
    """FROM (
  SELECT
    i.impression_id, i.request_id, i.user_id, i.`query`, i.pin_id, i.`position`, i.country,
    i.locale, i.event_time, i.rt,""",
)


def _norm(sql: str) -> str:
    """Whitespace and identifier quoting do not change a statement."""
    sql = sql.replace("${ts_format}", TS_FORMAT).replace("`", "")
    sql = re.sub(r"\s+", " ", sql)
    return re.sub(r"\s*([(),])\s*", r"\1", sql).strip()


def _conjuncts(where: str) -> set[str]:
    return {_norm(p) for p in re.split(r"\s+AND\s+(?![^(]*\))", where.removeprefix("WHERE"))}


def test_the_generated_sql_is_the_hand_written_sql() -> None:
    job = render(Settings())
    script = _norm(job.script())
    for fragment in [SINK_COLUMNS, *DLQ_VALUES.values(), *PASSTHROUGH]:
        assert _norm(fragment) in script, fragment
    # The source's columns are now typed from the record's text, in the same order and types.
    hand_written = re.findall(r"`?(\w+)`? (\w+(?:\(\d\))?),", SOURCE_COLUMNS)[1:]
    typed_as = [(c.name, c.flink_type()) for c in ddl.source_columns()]
    assert typed_as == hand_written
    (typed,) = [s for s in job.ddl if s.startswith("CREATE TEMPORARY VIEW events_typed ")]
    aliases = re.findall(r" END AS `(\w+)`,", typed)
    assert aliases == [name for name, _ in hand_written]
    # The validity filters kept every hand-written predicate, and added only the JSON type
    # check and the string checks of the decode step (lengths, patterns, text bytes).
    for topic, where in VALIDITY.items():
        (view,) = [s for s in job.ddl if s.startswith(f"CREATE TEMPORARY VIEW {topic}_valid ")]
        generated = _conjuncts(view.split("WHERE", 1)[1])
        assert _conjuncts(where) <= generated, topic
        for extra in generated - _conjuncts(where) - {"json_ok"}:
            assert re.match(r"\(?(\w+ IS NULL OR )?(REGEXP|CHAR_LENGTH)\(", extra), extra


def _top_level_items(select_list: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, char in enumerate(select_list):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(select_list[start:i])
            start = i + 1
    return [*items, select_list[start:]]


def test_the_enriched_insert_fills_every_sink_column_in_order() -> None:
    (insert,) = [s for s in render(Settings()).inserts if "INSERT INTO enriched_sink" in s]
    outer = insert.split("SELECT", 1)[1].split("\nFROM (", 1)[0]
    items = _top_level_items(outer)
    fields = list(EnrichedImpression.model_fields)
    assert len(items) == len(fields)
    assert len(fields) - len(ddl.feature_columns()) == len(Impression.model_fields)


def _with_device() -> tuple[type[Event], type[Event]]:
    """Impression and EnrichedImpression as they would be after adding one optional field."""
    impression = create_model(  # type: ignore[call-overload]
        "ImpressionWithDevice", __base__=Impression, device=(Text | None, None)
    )
    features: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in EnrichedImpression.model_fields.items()
        if name not in Impression.model_fields
    }
    enriched = create_model(  # type: ignore[call-overload]
        "EnrichedWithDevice", __base__=impression, **features
    )
    enriched.topic, enriched.table = EnrichedImpression.topic, EnrichedImpression.table
    return impression, enriched


def test_an_optional_field_added_to_a_model_flows_into_the_job(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    impression, enriched = _with_device()
    monkeypatch.setattr(ddl, "SOURCE_MODELS", (impression, *ddl.SOURCE_MODELS[1:]))
    monkeypatch.setattr(ddl, "IMPRESSION_MODEL", impression)
    monkeypatch.setattr(ddl, "ENRICHED_MODEL", enriched)
    job = render(Settings())
    script = job.script()
    typed = script[script.index("CREATE TEMPORARY VIEW events_typed") :].split(";")[0]
    assert "THEN JSON_VALUE(payload, '$.device') END AS `device`," in typed
    assert "COALESCE(JSON_QUERY(payload, '$.device' WITH ARRAY WRAPPER) LIKE" in typed
    sink = script[script.index("CREATE TEMPORARY TABLE enriched_sink") :]
    assert "`locale` STRING,\n  `event_time` STRING,\n  `device` STRING," in sink
    (dlq,) = [s for s in job.inserts if "INSERT INTO impressions_dlq" in s]
    assert "KEY 'device' VALUE `device`" in dlq
    (insert,) = [s for s in job.inserts if "INSERT INTO enriched_sink" in s]
    assert "i.`device`" in insert
    outer = insert.split("SELECT", 1)[1].split("\nFROM (", 1)[0]
    assert len(_top_level_items(outer)) == len(enriched.model_fields)
    # Optional: checked only when present (text: no control characters, bounded size);
    # the other topics are untouched.
    valid = script[script.index("impressions_valid") :].split(";")[0]
    assert "AND (`device` IS NULL OR REGEXP(`device`, " in valid
    assert "device" not in script[script.index("INSERT INTO pin_content_dlq") :]


def test_a_field_two_topics_type_differently_is_refused() -> None:
    clash = create_model("Clash", __base__=Event, position=(str, ...))
    with pytest.raises(ddl.ModelSqlError, match=r"Clash\.position is STRING but Impression"):
        ddl.source_columns((Impression, clash))


def test_a_type_without_a_flink_mapping_is_named() -> None:
    odd = create_model("Odd", __base__=Event, blob=(bytes, ...))
    with pytest.raises(TypeError, match=r"Odd\.blob"):
        ddl.columns(odd)


def test_an_optional_constrained_field_is_checked_only_when_present() -> None:
    fields: dict[str, Any] = {
        "rank": (Annotated[int, Field(ge=1, le=LONG_MAX)] | None, None),
        "kind": (Literal["a", "b"] | None, None),
        "must": (Literal["x"], ...),
    }
    model = create_model("Optionals", __base__=Event, **fields)
    where = ddl.validity(model, 16_384)
    assert "(`rank` IS NULL OR `rank` >= 1)" in where
    assert "(`kind` IS NULL OR `kind` IN ('a', 'b'))" in where
    assert "AND `must` IN ('x')" in where


def test_patterns_are_translated_to_java() -> None:
    # Rust's \s is Unicode (a no-break space is blank), its $ ends the text.
    assert ddl.java_pattern(ID_PATTERN) == "(?U)" + ID_PATTERN[:-1] + "\\z"
    assert ddl.java_pattern(TEXT_PATTERN) == TEXT_PATTERN[:-1] + "\\z"
