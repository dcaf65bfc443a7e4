"""The enrichment job's column lists, validity filters and dead-letter payloads, from the models.

The guarantee: a topic's shape is written down once, in its pydantic model (schemas/), and
the Flink SQL follows it. `streams/enrich/sql.py` fills the `${...}` placeholders of the
SQL templates with what this module renders:

- `typed_columns`, `json_types`: the source reads each record's value as text (`payload`);
  the `events_typed` view types every field from it, the union of the five event models'
  fields (first model first), each typed by its Iceberg type (schemas/registry.py) mapped
  to Flink (`long` -> BIGINT, `timestamptz` -> TIMESTAMP_LTZ(6), ...), and `json_ok` says
  whether every field of the record's model has its JSON type: `"position": "3"` or
  `"user_id": 5` is refused, as the strict decode refuses it, not coerced as Flink's JSON
  format would. Two models that declare one name with different types are refused: the
  topics share one source table. `source_time` reads the rowtime the same way.
- `sink_columns`: the `enriched_sink` columns, `EnrichedImpression`'s fields, times as
  strings in the producers' format.
- `validity`: a topic's filter, what the decode step refuses as far as typed columns show
  it: every required field present, a `Literal` field one of its values, a number within
  the bounds its annotation narrows (`position >= 1`), a string within its length and
  pattern (ids not blank, no control characters) and `decode.max_text_bytes`.
- `json_payload`: a refused record re-serialized as JSON for its dead letter: every field
  of its model, times in the producers' format.
- `passthrough`: the impression's own fields, passed through to the enriched row.

So adding an optional field to a topic's model (and `freshlabel schemas register`) adds it
to the job: read from the topic, kept in its dead letters, and for an impression, written
to `impressions.enriched` once `EnrichedImpression` (a subclass) has it too. Every
generated identifier is back-quoted, so a field named like a SQL keyword needs nothing.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass
from typing import Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import StringConstraints
from pydantic.fields import FieldInfo

from schemas.base import INT_MAX, INT_MIN, LONG_MAX, LONG_MIN, Event
from schemas.board_save import BoardSave
from schemas.engagement import Engagement
from schemas.enriched_impression import EnrichedImpression
from schemas.impression import Impression
from schemas.pin_caption import PinCaption
from schemas.pin_content import PinContent
from schemas.registry import FieldShape, model_shapes

# The topics the job reads, in the order their fields appear in `events_src`.
SOURCE_MODELS: tuple[type[Event], ...] = (
    Impression,
    PinContent,
    PinCaption,
    BoardSave,
    Engagement,
)
# The enriched row: the impression's own fields (passed through), then the pin's features.
IMPRESSION_MODEL: type[Event] = Impression
ENRICHED_MODEL: type[Event] = EnrichedImpression

# Iceberg primitive (schemas/registry.py) -> Flink SQL type of a source column.
FLINK_TYPES: dict[str, str] = {
    "boolean": "BOOLEAN",
    "int": "INT",
    "long": "BIGINT",
    "float": "FLOAT",
    "double": "DOUBLE",
    "string": "STRING",
    "timestamptz": "TIMESTAMP_LTZ(6)",
}
# A type's own range: a bound no narrower needs no predicate.
_TYPE_RANGES: dict[str, tuple[int, int]] = {
    "int": (INT_MIN, INT_MAX),
    "long": (LONG_MIN, LONG_MAX),
}


class ModelSqlError(TypeError):
    """A model the job's SQL cannot be generated from; the message names the field."""


@dataclass(frozen=True)
class Column:
    """One model field as the job's SQL sees it."""

    name: str
    iceberg: str
    required: bool
    element: str | None = None
    literals: tuple[str, ...] = ()
    lower: tuple[str, Any] | None = None  # (">=" or ">", bound)
    upper: tuple[str, Any] | None = None  # ("<=" or "<", bound)
    pattern: str | None = None  # the model's regular expression (pydantic's Rust syntax)
    min_length: int | None = None
    max_length: int | None = None

    @property
    def sql(self) -> str:
        """The back-quoted identifier."""
        return quote(self.name)

    @property
    def is_time(self) -> bool:
        return self.iceberg == "timestamptz"

    def flink_type(self, time_type: str | None = None) -> str:
        """The column's Flink type; `time_type` replaces TIMESTAMP_LTZ(6) (sinks: STRING)."""
        if self.iceberg == "list":
            return f"ARRAY<{_flink_primitive(self.element or '', self.name, time_type)}>"
        return _flink_primitive(self.iceberg, self.name, time_type)


def quote(name: str) -> str:
    """A Flink SQL identifier, back-quoted."""
    return "`" + name.replace("`", "``") + "`"


def _flink_primitive(iceberg: str, where: str, time_type: str | None) -> str:
    if iceberg == "timestamptz" and time_type is not None:
        return time_type
    try:
        return FLINK_TYPES[iceberg]
    except KeyError:
        raise ModelSqlError(
            f"{where}: no Flink type for Iceberg {iceberg!r}; add it to FLINK_TYPES in "
            "streams/enrich/ddl.py"
        ) from None


def _constraints(model: type[Event], shape: FieldShape) -> dict[str, Any]:
    info = model.model_fields[shape.name]
    annotation = info.annotation
    # An optional field keeps its constraints inside the union: `Text | None`.
    metadata = list(info.metadata)
    members = (annotation, *typing.get_args(annotation))
    for member in members:
        if typing.get_origin(member) is typing.Annotated:
            for item in typing.get_args(member)[1:]:
                metadata += item.metadata if isinstance(item, FieldInfo) else [item]
    literals: tuple[str, ...] = ()
    for member in members:
        if typing.get_origin(member) is Literal:
            literals = tuple(str(v) for v in typing.get_args(member))
    lower: tuple[str, Any] | None = None
    upper: tuple[str, Any] | None = None
    for item in metadata:
        if isinstance(item, Ge):
            lower = (">=", item.ge)
        elif isinstance(item, Gt):
            lower = (">", item.gt)
        elif isinstance(item, Le):
            upper = ("<=", item.le)
        elif isinstance(item, Lt):
            upper = ("<", item.lt)
    low, high = _TYPE_RANGES.get(shape.type, (None, None))
    if lower == (">=", low):
        lower = None
    if upper == ("<=", high):
        upper = None
    strings = [item for item in metadata if isinstance(item, StringConstraints)]
    text = strings[-1] if strings else StringConstraints()
    return {
        "literals": literals,
        "lower": lower,
        "upper": upper,
        "pattern": text.pattern if isinstance(text.pattern, str) else None,
        "min_length": text.min_length,
        "max_length": text.max_length,
    }


def columns(model: type[Event]) -> list[Column]:
    """The model's fields in declaration order, with the constraints the SQL checks.

    Args:
        model: an event model.

    Returns:
        One `Column` per model field (the sink's bookkeeping columns excluded).

    Raises:
        ModelSqlError: a field whose type has no Flink equivalent.
    """
    out = []
    for shape in model_shapes(model):
        if shape.name not in model.model_fields:
            continue
        out.append(
            Column(
                name=shape.name,
                iceberg=shape.type,
                required=shape.required,
                element=shape.element_type,
                **_constraints(model, shape),
            )
        )
    for column in out:
        column.flink_type()  # refuse an unmapped type here, naming the field
    return out


def source_columns(models: tuple[type[Event], ...] | None = None) -> list[Column]:
    """The union of the models' fields, first appearance first: the shared source's columns.

    Args:
        models: the topics' models; default `SOURCE_MODELS`.

    Returns:
        One column per distinct field name.

    Raises:
        ModelSqlError: two models declare one field name with different types.
    """
    seen: dict[str, tuple[type[Event], Column]] = {}
    for model in SOURCE_MODELS if models is None else models:
        for column in columns(model):
            if column.name not in seen:
                seen[column.name] = (model, column)
                continue
            first, other = seen[column.name]
            if other.flink_type() != column.flink_type():
                raise ModelSqlError(
                    f"{model.__name__}.{column.name} is {column.flink_type()} but "
                    f"{first.__name__}.{column.name} is {other.flink_type()}: the topics "
                    "share one Flink source table; give one of them another name"
                )
    return [column for _, column in seen.values()]


def column_list(cols: list[Column], time_type: str | None = None) -> str:
    """`  name TYPE,` lines of a CREATE TABLE, each ending in a comma."""
    return "\n".join(f"  {c.sql} {c.flink_type(time_type)}," for c in cols)


def sink_columns() -> str:
    """The enriched sink's columns (`ENRICHED_MODEL`): times are strings in the producers'
    format."""
    return column_list(columns(ENRICHED_MODEL), time_type="STRING").rstrip(",")


def java_pattern(pattern: str) -> str:
    """A model's regular expression (pydantic's Rust `regex` syntax) for Flink's REGEXP (Java).

    Rust's `\\s`, `\\d`, `\\w` are Unicode classes (a no-break space is blank), Java's are
    ASCII unless `(?U)`; Rust's `$` ends the text, Java's also matches before a final
    newline, so it becomes `\\z`.
    """
    body = (
        pattern[:-1] + "\\z" if pattern.endswith("$") and not pattern.endswith("\\$") else pattern
    )
    return "(?U)" + body if re.search(r"\\[sSdDwWbB]", body) else body


def _string_checks(column: Column, max_text_bytes: int) -> list[str]:
    """What the decode step checks of a string beyond its type (streams/decode.py)."""
    if column.iceberg != "string" or column.literals:
        return []
    checks = []
    if column.min_length:
        checks.append(f"CHAR_LENGTH({column.sql}) >= {column.min_length}")
    if column.max_length is not None:
        checks.append(f"CHAR_LENGTH({column.sql}) <= {column.max_length}")
    if column.pattern is not None:
        checks.append(f"REGEXP({column.sql}, {sql_string(java_pattern(column.pattern))})")
    if column.max_length is None or column.max_length * 4 > max_text_bytes:
        # decode.max_text_bytes counts UTF-8 bytes: at most 4 a character, so a short text
        # needs no count; a longer one is counted from its base64 (4 characters per 3 bytes,
        # unpadded), whose length grows strictly with the byte count.
        base64_limit = -(-max_text_bytes * 4 // 3)
        checks.append(
            f"(CHAR_LENGTH({column.sql}) <= {max_text_bytes // 4} OR "
            f"CHAR_LENGTH(TRIM(TRAILING '=' FROM TO_BASE64({column.sql}))) <= {base64_limit})"
        )
    return checks


def sql_string(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _predicate(column: Column, max_text_bytes: int) -> str | None:
    if column.literals:
        values = ", ".join(sql_string(v) for v in column.literals)
        checks = [f"{column.sql} IN ({values})"]
    else:
        bounds = (column.lower, column.upper)
        checks = [f"{column.sql} {b[0]} {b[1]}" for b in bounds if b is not None]
        checks += _string_checks(column, max_text_bytes)
    if column.required:
        # A comparison is not true for a null: a constrained field needs no IS NOT NULL.
        if column.literals or column.lower or column.upper:
            return " AND ".join(checks)
        return " AND ".join([f"{column.sql} IS NOT NULL", *checks])
    if checks:
        return f"({column.sql} IS NULL OR " + " AND ".join(checks) + ")"
    return None


def validity(model: type[Event], max_text_bytes: int) -> str:
    """The topic's validity filter: what the decode step refuses of a record's fields,
    as far as the typed columns show it (streams/decode.py).

    Required fields present; a `Literal` field one of its values; a number within the
    bounds its annotation narrows; a string within its length, matching its pattern (an
    id not blank, no control character), at most `max_text_bytes` in UTF-8. A comparison
    is false for a null, so a constrained field is also required by it; an optional field
    is checked when present.

    Args:
        model: the topic's model.
        max_text_bytes: `decode.max_text_bytes`.

    Returns:
        The predicates, joined by AND.
    """
    predicates = [p for c in columns(model) if (p := _predicate(c, max_text_bytes)) is not None]
    return "\n  AND ".join(predicates) or "TRUE"


def _formatted(column: Column, ts_format: str, prefix: str = "") -> str:
    if column.is_time:
        return f"DATE_FORMAT({prefix}{column.sql}, {ts_format})"
    return f"{prefix}{column.sql}"


def json_payload(model: type[Event], ts_format: str) -> str:
    """A JSON_OBJECT of every field of the model (times formatted), nulls kept."""
    pairs = ",\n    ".join(
        f"KEY '{c.name}' VALUE {_formatted(c, ts_format)}" for c in columns(model)
    )
    return f"JSON_OBJECT(\n    {pairs} NULL ON NULL)"


def passthrough(model: type[Event], ts_format: str | None = None, prefix: str = "") -> str:
    """The model's fields as a SELECT list; with `ts_format`, times formatted as strings."""
    return ", ".join(
        _formatted(c, ts_format, prefix) if ts_format else f"{prefix}{c.sql}"
        for c in columns(model)
    )


def feature_columns() -> list[str]:
    """The enriched model's fields that are not the impression's: what the join computes."""
    own = set(IMPRESSION_MODEL.model_fields)
    return [name for name in ENRICHED_MODEL.model_fields if name not in own]


# -- reading the value as text: every field typed from the record's JSON ------------------
# JSON_QUERY(... WITH ARRAY WRAPPER) shows a field as JSON (`["3"]`, `[3]`, NULL when absent
# or null), so its JSON type can be checked; JSON_VALUE gives its value. Each call parses
# the text again, so a field is read only for the topics that have it.

# A time as the producers write it (ISO-8601 with a literal 'Z', what the JSON format's
# ISO-8601 reader took), as JSON_QUERY shows it.
_TIME_JSON = r'^\["[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z"\]\z'
_JSON_TYPES = {
    "string": "{} LIKE '[\"%'",
    "long": "REGEXP({}, '^\\[-?[0-9]+\\]\\z')",
    "int": "REGEXP({}, '^\\[-?[0-9]+\\]\\z')",
    "boolean": "{} IN ('[true]', '[false]')",
    "double": "REGEXP({}, '^\\[-?[0-9]')",
    "float": "REGEXP({}, '^\\[-?[0-9]')",
}


def _path(column: Column) -> str:
    return sql_string(f"$.{column.name}")


def json_read(column: Column, payload: str = "payload") -> str:
    """The field's typed value read from the JSON text (NULL when absent or unreadable)."""
    text = f"JSON_VALUE({payload}, {_path(column)})"
    if column.is_time:
        naive = f"TRY_CAST(REPLACE(REPLACE({text}, 'T', ' '), 'Z', '') AS TIMESTAMP(6))"
        return f"CAST({naive} AS TIMESTAMP_LTZ(6))"
    if column.iceberg == "string":
        return text
    return f"TRY_CAST({text} AS {column.flink_type()})"


def json_type_check(column: Column, payload: str = "payload") -> str:
    """True when the field is absent, null, or of its JSON type (a string is no number)."""
    shown = f"JSON_QUERY({payload}, {_path(column)} WITH ARRAY WRAPPER)"
    if column.is_time:
        return f"COALESCE(REGEXP({shown}, {sql_string(_TIME_JSON)}), TRUE)"
    try:
        kind = _JSON_TYPES[column.iceberg]
    except KeyError:
        raise ModelSqlError(
            f"{column.name}: no JSON type check for Iceberg {column.iceberg!r}; add it to "
            "_JSON_TYPES in streams/enrich/ddl.py"
        ) from None
    return f"COALESCE({kind.format(shown)}, TRUE)"


def typed_columns(models: tuple[type[Event], ...] | None = None) -> str:
    """SELECT lines reading each source column from `payload`, only for the topics that
    have the field (a JSON function parses the text on every call).

    Args:
        models: the topics' models; default `SOURCE_MODELS`.

    Returns:
        `  CASE WHEN kafka_topic IN (...) THEN <value> END AS `field`,` lines.
    """
    models = SOURCE_MODELS if models is None else models
    lines = []
    for column in source_columns(models):
        topics = ", ".join(sql_string(m.topic) for m in models if column.name in m.model_fields)
        lines.append(
            f"  CASE WHEN kafka_topic IN ({topics}) THEN {json_read(column)} END AS {column.sql},"
        )
    return "\n".join(lines)


def json_types(models: tuple[type[Event], ...] | None = None) -> str:
    """A CASE over the topic: every field of the record's model has its JSON type (or is
    absent or null: whether it may be is the validity filter's business). Another topic's
    record (the clock topic's) is FALSE.

    Args:
        models: the topics' models; default `SOURCE_MODELS`.

    Returns:
        A BOOLEAN expression over `payload` and `kafka_topic`.
    """
    models = SOURCE_MODELS if models is None else models
    whens = "\n".join(
        f"    WHEN {sql_string(m.topic)} THEN "
        + "\n      AND ".join(json_type_check(c) for c in columns(m))
        for m in models
    )
    return f"CASE kafka_topic\n{whens}\n    ELSE FALSE END"


def _read_time(field: str) -> str:
    return json_read(Column(name=field, iceberg="timestamptz", required=True))


def source_time(time_fields: dict[str, str], default_field: str) -> str:
    """The record's event time read from `payload`, for the source's rowtime.

    Args:
        time_fields: topic -> its event-time field.
        default_field: the field of every other topic (the clock topic's).

    Returns:
        A CASE over `kafka_topic`, TIMESTAMP_LTZ(6), NULL for a record without a time.
    """
    whens = "".join(
        f"WHEN {sql_string(topic)} THEN {_read_time(field)} "
        for topic, field in time_fields.items()
        if field != default_field
    )
    return f"CASE kafka_topic {whens}ELSE {_read_time(default_field)} END"
