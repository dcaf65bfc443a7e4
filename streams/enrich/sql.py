"""Render the enrichment job's SQL (streams/enrich/sql/*.sql) from settings.

The job IS these statements; this module only fills in connection options, intervals, the
few lists that depend on K, and what the topics' models decide (streams/enrich/ddl.py:
column lists, validity filters, dead-letter payloads), so no SQL file repeats a model. It
imports nothing from PyFlink, so both virtual environments (and the tests) can render and
inspect the exact SQL that runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from infra.config import Settings
from schemas.topics import dlq_topic
from streams.dlq import Reason
from streams.enrich import ddl

SQL_DIR = Path(__file__).with_name("sql")
OUTPUT_TOPIC = "impressions.enriched"
# Flink's day-time interval literals take at most 3 day digits.
MAX_WINDOW_DAYS = 999
DLQ_CONSUMER = "flink:{job_name}"
# The producers' format (schemas/base.py `_iso_z`), in Java DateTimeFormatter syntax.
TS_FORMAT = "'yyyy-MM-dd''T''HH:mm:ss.SSSSSS''Z'''"

# Source topic -> its event-time column (the models' `time_field`).
SOURCES: dict[str, str] = {model.topic: model.time_field for model in ddl.SOURCE_MODELS}
# The clock topic's marks carry this field (streams/enrich/clock.py).
CLOCK_TIME_FIELD = "event_time"

# The versioned topics, compacted by pin (the latest version of a pin is kept forever): their
# late records are still applied, from the watermark they met on, and their event times have
# no age bound (decode.max_age_days), only the future one.
LATE_VERSION_TOPICS = ("pin_content", "pin_captions")
# The event time of a record of any topic (the clock topic's too).
RAW_TIME = (
    "CASE kafka_topic "
    + "".join(
        f"WHEN '{topic}' THEN {field} "
        for topic, field in SOURCES.items()
        if field != CLOCK_TIME_FIELD
    )
    + f"ELSE {CLOCK_TIME_FIELD} END"
)

# kafka-python client options -> Kafka Java client properties, for external clusters.
_CLIENT_PROPERTIES = {
    "security_protocol": "security.protocol",
    "sasl_mechanism": "sasl.mechanism",
    "ssl_cafile": "ssl.truststore.location",
    "ssl_check_hostname": None,  # the Java client verifies hostnames by default
    "request_timeout_ms": "request.timeout.ms",
}


class SqlSettingsError(ValueError):
    """Settings the job cannot be rendered with; the message names the setting."""


@dataclass(frozen=True)
class JobSql:
    """The statements of the job: DDL and views first, then the INSERTs of one statement set."""

    ddl: list[str]
    inserts: list[str]

    def script(self) -> str:
        return ";\n\n".join(self.ddl + self.inserts) + ";\n"


def interval(seconds: float) -> str:
    """A SQL interval literal for any non-negative duration, to the millisecond."""
    if seconds < 0:
        raise SqlSettingsError(f"negative duration {seconds}s cannot be a SQL interval")
    total_ms = round(seconds * 1000)
    days, rest = divmod(total_ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    # Flink's day precision goes up to 6 digits; 3 is the default.
    precision = max(3, len(str(days)))
    if precision > 6:
        raise SqlSettingsError(f"duration {seconds}s exceeds Flink's 999999-day intervals")
    return (
        f"INTERVAL '{days} {hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}' "
        f"DAY({precision}) TO SECOND(3)"
    )


def state_ttl_s(settings: Settings) -> float:
    """The job's state TTL in seconds (0: none): `flink.version_ttl_days`, raised to the
    longest feature window plus one slide so windowed state outlives every window it can
    still show. Flink counts it in wall-clock time since a pin's state was last touched."""
    f = settings.flink
    if f.version_ttl_days <= 0:
        return 0.0
    windows_s = max(
        f.top_queries_window_days * 86400 + f.top_queries_slide_hours * 3600,
        f.top_boards_window_days * 86400 + f.top_boards_slide_hours * 3600,
    )
    return max(f.version_ttl_days * 86400, windows_s)


def _millis(seconds: float) -> str:
    """A Flink duration option value."""
    return f"{round(seconds * 1000)} ms"


def _quote(value: object) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _options(options: dict[str, Any]) -> str:
    return ",\n".join(f"  {_quote(k)} = {_quote(v)}" for k, v in options.items())


def kafka_properties(settings: Settings) -> dict[str, str]:
    """`properties.*` for every Kafka table: bootstrap servers plus the security options of
    an external cluster (kafka-python names translated to the Java client's)."""
    props = {"properties.bootstrap.servers": settings.broker.bootstrap}
    options = dict(settings.broker.client_options)
    user = options.pop("sasl_plain_username", None)
    password = options.pop("sasl_plain_password", None)
    for name, value in options.items():
        if name not in _CLIENT_PROPERTIES:
            raise SqlSettingsError(
                f"broker.client_options.{name} has no Flink/Java Kafka equivalent here; "
                f"known: {', '.join(sorted(_CLIENT_PROPERTIES))}, sasl_plain_username, "
                "sasl_plain_password"
            )
        java_name = _CLIENT_PROPERTIES[name]
        if java_name is not None:
            props[f"properties.{java_name}"] = str(value)
            if name == "ssl_cafile":
                props["properties.ssl.truststore.type"] = "PEM"
    if user is not None:
        mechanism = str(options.get("sasl_mechanism", "PLAIN")).upper()
        module = (
            "org.apache.kafka.common.security.scram.ScramLoginModule"
            if mechanism.startswith("SCRAM")
            else "org.apache.kafka.common.security.plain.PlainLoginModule"
        )
        props["properties.sasl.jaas.config"] = (
            f'{module} required username="{user}" password="{password or ""}";'
        )
    return props


def input_topics(settings: Settings) -> list[str]:
    """Every topic the job reads: the five event topics and the clock topic."""
    return [*SOURCES, settings.flink.clock_topic]


def source_options(settings: Settings, topics: list[str]) -> dict[str, str]:
    return {
        "connector": "kafka",
        "topic": ";".join(topics),
        **kafka_properties(settings),
        "properties.group.id": settings.flink.consumer_group,
        # A fresh deploy must see every version of every pin, so it reads from the start;
        # a restore from a savepoint resumes from the offsets stored in it instead.
        "scan.startup.mode": "earliest-offset",
        **_alignment(settings),
        # Small fetches interleave the partitions finely: the reader emits one fetched chunk
        # per partition at a time, and a partition whose chunk waits behind the others for
        # longer than the idle timeout would be taken for idle.
        "properties.max.partition.fetch.bytes": str(settings.flink.fetch_partition_bytes),
        "key.format": "raw",
        "key.fields": "kafka_key",
        # The value as text: its fields are typed from it in SQL (streams/enrich/ddl.py), so
        # a field of the wrong JSON type is refused, not coerced.
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
    }


def _alignment(settings: Settings) -> dict[str, str]:
    """Partitions advance in step: one that runs ahead of the slowest by more than the drift
    is paused, so a backlog is read in event-time order across topics instead of one
    partition starving the others into idleness (whose records would then come late)."""
    drift = settings.flink.alignment_max_drift_s
    if drift <= 0:
        return {}
    return {
        "scan.watermark.alignment.group": settings.flink.job_name,
        "scan.watermark.alignment.max-drift": _millis(drift),
        "scan.watermark.alignment.update-interval": "1 s",
    }


def sink_options(settings: Settings, topic: str, key_field: str) -> dict[str, str]:
    return {
        "connector": "kafka",
        "topic": topic,
        **kafka_properties(settings),
        "key.format": "raw",
        "key.fields": key_field,
        "value.format": "json",
        "value.fields-include": "EXCEPT_KEY" if key_field == "dlq_key" else "ALL",
        # Flushed on every checkpoint. Exactly-once would need Kafka transactions, which the
        # embedded broker does not isolate (read_committed shows aborted records).
        "sink.delivery-guarantee": "at-least-once",
        # Tansu has no idempotent producers (kafka-clients enables them by default).
        "properties.enable.idempotence": "false",
        "properties.linger.ms": "20",
        "properties.batch.size": str(256 * 1024),
    }


def _by_rank(k: int, rank_column: str, value_column: str) -> str:
    return ", ".join(
        f"MAX(CASE WHEN {rank_column} = {n} THEN {value_column} END)" for n in range(1, k + 1)
    )


def _check_window(name: str, days: int, slide_hours: int, k: int) -> None:
    if slide_hours < 1 or k < 1 or not 1 <= days <= MAX_WINDOW_DAYS:
        raise SqlSettingsError(
            f"flink.{name}: slide hours and k must be >= 1, window days 1..{MAX_WINDOW_DAYS}"
        )
    if (days * 24) % slide_hours:
        raise SqlSettingsError(
            f"flink.{name}_window_days={days} is not a whole number of "
            f"flink.{name}_slide_hours={slide_hours} slides; windows must end on slide "
            "boundaries for the point-in-time rule in docs/enrichment.md"
        )


def _dlq_head(settings: Settings, topic: str) -> str:
    """dlq_key, source_topic, partition, offset, reason, detail, key_b64 of a refused row."""
    time_column = SOURCES[topic]
    f, decode = settings.flink, settings.decode
    hold = f.watermark_delay_s + f.allowed_lateness_s
    shown = f"'{time_column} ' || DATE_FORMAT({time_column}, {TS_FORMAT})"
    if topic in LATE_VERSION_TOPICS:
        # Versions have no age bound (sources.sql): a compacted topic keeps old ones.
        out_of_range = (
            f"{shown} || ' is more than decode.max_future_s={decode.max_future_s:g}s ahead of "
            f"the wall clock ' || DATE_FORMAT(CURRENT_TIMESTAMP, {TS_FORMAT}) || ' (or exactly "
            "the epoch, a default rather than a time): refused before it could move the "
            "watermark. Fix the producer''s clock'"
        )
    else:
        out_of_range = (
            f"{shown} || ' is more than decode.max_future_s={decode.max_future_s:g}s ahead "
            f"of, or decode.max_age_days={decode.max_age_days:g} behind, the wall clock ' || "
            f"DATE_FORMAT(CURRENT_TIMESTAMP, {TS_FORMAT}) || ': refused before it could move "
            "the watermark. Fix the producer''s clock, or raise decode.max_age_days to "
            "replay older history'"
        )
    late = (
        f"{shown} || ' is at or behind the watermark ' || "
        f"DATE_FORMAT(seen_watermark, {TS_FORMAT}) || ' (the newest event time of the job "
        f"inputs minus watermark_delay_s + allowed_lateness_s = {hold:g}s)"
    )
    if topic in LATE_VERSION_TOPICS:
        late += (
            ": kept as a late version of pin ' || pin_id || ': it applies to impressions of "
            "that pin after the watermark; its impressions from ' || "
            f"DATE_FORMAT({time_column}, {TS_FORMAT}) || ' through ' || "
            f"DATE_FORMAT(seen_watermark, {TS_FORMAT}) || ' were enriched without it'"
        )
    else:
        late += (
            ": too late to join point-in-time. Raise flink.allowed_lateness_s, or replay it "
            "with a current time'"
        )
    reason = (
        f"CASE WHEN out_of_range THEN '{Reason.EVENT_TIME_OUT_OF_RANGE.value}' "
        f"ELSE '{Reason.LATE_EVENT.value}' END"
    )
    detail = f"CASE WHEN out_of_range THEN {out_of_range}\n    ELSE {late} END"
    return (
        f"'{topic}/' || CAST(kafka_partition AS STRING) || '/' || CAST(kafka_offset AS STRING),"
        f"\n  '{topic}', kafka_partition, kafka_offset, {reason},\n  {detail},"
        "\n  TO_BASE64(kafka_key)"
    )


def model_values(settings: Settings) -> dict[str, str]:
    """The placeholders the models decide (streams/enrich/ddl.py renders them).

    Returns:
        `source_columns` and `enriched_columns` (CREATE TABLE column lines),
        `impression_fields` / `impression_fields_of_i` (the impression passed through),
        and per source topic `valid_<topic>` (its validity filter) and `dlq_value_<topic>`
        (its dead letter's JSON).
    """
    impression = ddl.IMPRESSION_MODEL
    values = {
        "typed_columns": ddl.typed_columns(),
        "json_types": ddl.json_types(),
        "source_time": ddl.source_time(SOURCES, CLOCK_TIME_FIELD),
        "enriched_columns": ddl.sink_columns(),
        "impression_fields": ddl.passthrough(impression, TS_FORMAT),
        "impression_fields_of_i": ddl.passthrough(impression, prefix="i."),
    }
    for model in ddl.SOURCE_MODELS:
        values[f"valid_{model.topic}"] = ddl.validity(model, settings.decode.max_text_bytes)
        values[f"dlq_value_{model.topic}"] = ddl.json_payload(model, TS_FORMAT)
    return values


def render(settings: Settings) -> JobSql:
    """The job's statements for `settings`.

    Args:
        settings: connection, window and decode settings (flink.*, broker.*, decode.*).

    Returns:
        The DDL and views, then the INSERTs of the job's one statement set.

    Raises:
        SqlSettingsError: a window setting the point-in-time rule cannot work with.
        ModelSqlError: a model field the SQL cannot be generated for.
    """
    f = settings.flink
    _check_window(
        "top_queries", f.top_queries_window_days, f.top_queries_slide_hours, f.top_queries_k
    )
    _check_window("top_boards", f.top_boards_window_days, f.top_boards_slide_hours, f.top_boards_k)
    consumer = DLQ_CONSUMER.format(job_name=f.job_name)
    dlq_part = Template((SQL_DIR / "dlq_sink.sql.part").read_text())
    dlq_sinks = ";\n\n".join(
        dlq_part.substitute(
            name=f"{topic}_dlq",
            options=_options(sink_options(settings, dlq_topic(topic), "dlq_key")),
        )
        .strip()
        .rstrip(";")
        for topic in SOURCES
    )
    values: dict[str, str] = {
        "watermark_hold": interval(f.watermark_delay_s + f.allowed_lateness_s),
        "raw_time": RAW_TIME,
        "version_topics": ", ".join(_quote(topic) for topic in LATE_VERSION_TOPICS),
        "max_future": interval(settings.decode.max_future_s),
        "max_age": interval(settings.decode.max_age_days * 86400),
        "ts_format": TS_FORMAT,
        "boards_slide": interval(f.top_boards_slide_hours * 3600),
        "boards_size": interval(f.top_boards_window_days * 86400),
        "boards_k": str(f.top_boards_k),
        "boards_by_rank": _by_rank(f.top_boards_k, "title_rank", "board_title"),
        "queries_slide": interval(f.top_queries_slide_hours * 3600),
        "queries_size": interval(f.top_queries_window_days * 86400),
        "queries_k": str(f.top_queries_k),
        "queries_by_rank": _by_rank(f.top_queries_k, "query_rank", "`query`"),
        "content_row": "ROW<title STRING, description STRING, link_title STRING, "
        "link_description STRING, updated_at TIMESTAMP_LTZ(6)>",
        "caption_row": "ROW<caption STRING, created_at TIMESTAMP_LTZ(6)>",
        # A window's top K, its end, and the time from which it is the current window.
        "window_row": "ROW<top ARRAY<STRING>, window_end TIMESTAMP(3), "
        "valid_from TIMESTAMP_LTZ(3)>",
        "sink_enriched": _options(sink_options(settings, OUTPUT_TOPIC, "impression_id")),
        "dlq_sinks": dlq_sinks,
        "dlq_tail": f"{_quote(consumer)}, DATE_FORMAT(CURRENT_TIMESTAMP, {TS_FORMAT})",
    }
    values["source_events"] = _options(source_options(settings, input_topics(settings)))
    values.update(model_values(settings))
    for topic in SOURCES:
        values[f"dlq_head_{topic}"] = _dlq_head(settings, topic)

    def statements(name: str) -> list[str]:
        text = Template((SQL_DIR / name).read_text()).substitute(values)
        return split_statements(text)

    ddl = statements("sources.sql") + statements("split.sql") + statements("features.sql")
    ddl += statements("sinks.sql")
    return JobSql(ddl=ddl, inserts=statements("inserts.sql"))


def split_statements(text: str) -> list[str]:
    """Statements of a script: comment lines dropped, split at a ';' that ends a line."""
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in re.split(r";[ \t]*(?:\n|$)", body) if s.strip()]
