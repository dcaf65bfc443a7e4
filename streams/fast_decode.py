"""Bulk decode for the sink: whole polls of JSON records into Arrow columns, same verdicts.

The strict path (`streams.decode.parse`, one pydantic validation per record) costs ~40 µs a
row; this one decodes a poll with `msgspec` into typed structs and checks the models'
constraints column by column with Arrow compute, a few µs a row.

The guarantee: **the fast path never changes a verdict or a value.** It only *vouches* for a
record when it is sure the strict model would accept it and produce exactly the row it
built; every record it cannot vouch for goes through the strict model, which accepts it
(its row is then built from the pydantic event, as before) or refuses it with its usual
dead-letter reason and detail. So for any input the rows and dead letters are the strict
path's; the fast path only changes how fast the common, valid record is settled.

How it stays sure, field by field (all derived from the pydantic models in schemas/, the one
definition; a model with a field or option this module does not understand has no fast path
and is decoded strictly, record by record):

- the struct mirrors the model: the same field names, JSON types (strict: "3" is not an
  int, 1 is not a string), optional fields defaulting to null, unknown fields ignored;
- ints keep their model bounds, clamped to a signed 64-bit long;
- text and ids are checked with the model's own regular expression (RE2 in Arrow, where
  `\\s` is ASCII only, so the fast check widens it to Unicode space: stricter, never looser)
  and its length bounds in code points;
- floats must be finite where the model says so (JSON `NaN`/`1e999` fall to the strict path);
- times are vouched for only in the plain RFC 3339 form (`2026-11-20T12:00:00.5+01:00`),
  parsed by Arrow to UTC microseconds, inside years 1-9999 and, for the event time, inside the
  decoder's window `[now - decode.max_age_days, now + decode.max_future_s]`;
- whole records go strict when they are empty, over `decode.max_text_bytes` (the strict
  path's text-size check), not valid UTF-8 (msgspec does not look inside fields it skips),
  or hold more than `MAX_BRACKETS` brackets (pydantic refuses JSON nested 200 deep; msgspec
  would not).

`tests/test_sink_fast_path.py` feeds every bad-input kind through both paths and compares
dead letters, and compares the Arrow rows of realistic generated records.
"""

from __future__ import annotations

import logging
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Annotated, Any, Literal

import annotated_types
import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import AwareDatetime
from pydantic.fields import FieldInfo
from pydantic.functional_serializers import PlainSerializer
from pydantic.functional_validators import AfterValidator
from pydantic.types import StringConstraints

from schemas.base import LONG_MAX, LONG_MIN, Event, _to_utc
from schemas.registry import IcebergType
from streams.arrow_rows import model_columns

log = logging.getLogger(__name__)

# More '[' and '{' bytes than this and a record is judged strictly: it may nest deeper than
# pydantic's JSON parser allows (msgspec's limit is higher), and no event model nests at all.
MAX_BRACKETS = 64

# The one time format the fast path vouches for: RFC 3339 with a 'T', seconds, at most six
# fraction digits and a zone. Anything else (a space, lowercase, leap seconds, 7+ digits)
# is left to pydantic, which accepts or refuses it as it always has.
TIME_PATTERN = (
    r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]"
    r":[0-5][0-9](\.[0-9]{1,6})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
# Years 1-9999 in UTC, in epoch microseconds (the years Python's datetime holds).
MIN_TIME_US = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // _US
MAX_TIME_US = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // _US
_TIMESTAMP = pa.timestamp("us", tz="UTC")
# What `\s` means in pydantic's (Rust) regexes: Unicode White_Space. RE2's `\s` is ASCII.
_UNICODE_SPACE = r"\s\p{Z}\x{85}"


class Unsupported(TypeError):
    """A model field (or option) the fast path cannot mirror exactly; the model is decoded
    strictly instead."""


@dataclass(frozen=True)
class _Field:
    """One model field as the fast path checks it."""

    name: str
    kind: Literal["str", "literal", "int", "float", "bool", "time"]
    is_list: bool = False
    optional: bool = False
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    finite: bool = False
    ge: int | None = None
    le: int | None = None
    choices: tuple[str, ...] = ()


def to_micros(value: datetime) -> int:
    """Epoch microseconds of an aware datetime."""
    return (value - _EPOCH) // _US


def re2_pattern(pattern: str, where: str) -> str:
    """The model's pattern for Arrow's RE2, never looser than pydantic's Rust regex.

    Args:
        pattern: the `StringConstraints.pattern` of a field.
        where: model.field, for the message.

    Returns:
        The pattern with each `\\s` (only allowed inside a negated class, where widening it
        makes the check stricter) widened to Unicode white space.

    Raises:
        Unsupported: the pattern uses syntax whose meaning could differ between the engines.
    """
    out: list[str] = []
    i, in_class, negated = 0, False, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = pattern[i + 1 : i + 2]
            if escape == "x" and len(pattern) >= i + 4:
                out.append(pattern[i : i + 4])
                i += 4
                continue
            if escape == "s" and in_class and negated:
                out.append(_UNICODE_SPACE)
            elif escape in ("\\", "-", "]", "[", ".", "^", "$"):
                out.append(pattern[i : i + 2])
            else:
                raise Unsupported(f"{where}: escape \\{escape} in {pattern!r}")
            i += 2
            continue
        if in_class:
            if char == "]":
                in_class = False
        elif char == "[":
            in_class = True
            negated = pattern[i + 1 : i + 2] == "^"
        elif char in ".()|":
            raise Unsupported(f"{where}: {char!r} in {pattern!r}")
        out.append(char)
        i += 1
    return "".join(out)


def _peel(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    """The bare type under Annotated[...] layers, with every layer's metadata."""
    while typing.get_origin(annotation) is Annotated:
        annotation, *extra = typing.get_args(annotation)
        metadata = [*metadata, *extra]
    flat: list[Any] = []
    for item in metadata:
        if isinstance(item, FieldInfo):
            flat.extend(item.metadata)
        else:
            flat.append(item)
    return annotation, flat


def _optional(annotation: Any) -> tuple[Any, bool]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return annotation, False


def _scalar(name: str, annotation: Any, metadata: list[Any], where: str) -> _Field:
    annotation, metadata = _peel(annotation, metadata)
    spec: dict[str, Any] = {}
    time = False
    for item in metadata:
        if isinstance(item, StringConstraints):
            extra = {"strip_whitespace", "to_upper", "to_lower", "strict", "ascii_only"}
            if any(getattr(item, k) is not None for k in extra):
                raise Unsupported(f"{where}: {item!r}")
            if item.pattern is not None:
                pattern = item.pattern
                if not isinstance(pattern, str):
                    raise Unsupported(f"{where}: compiled pattern {pattern!r}")
                spec["pattern"] = re2_pattern(pattern, where)
            spec["min_length"], spec["max_length"] = item.min_length, item.max_length
        elif isinstance(item, annotated_types.Ge) and isinstance(item.ge, int):
            spec["ge"] = item.ge
        elif isinstance(item, annotated_types.Le) and isinstance(item.le, int):
            spec["le"] = item.le
        elif isinstance(item, annotated_types.Gt) and isinstance(item.gt, int):
            spec["ge"] = item.gt + 1
        elif isinstance(item, annotated_types.Lt) and isinstance(item.lt, int):
            spec["le"] = item.lt - 1
        elif type(item).__name__ == "AllowInfNan" and item.allow_inf_nan is False:
            spec["finite"] = True
        elif isinstance(item, AfterValidator) and item.func is _to_utc:
            time = True
        elif isinstance(item, PlainSerializer | IcebergType):
            continue  # how the value is written out or stored, not what is accepted
        else:
            raise Unsupported(f"{where}: {item!r}")
    if time:
        if annotation is not AwareDatetime or set(spec):
            raise Unsupported(f"{where}: {annotation!r} with {metadata!r}")
        return _Field(name, "time")
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        if not all(type(c) is str for c in choices) or spec:
            raise Unsupported(f"{where}: {annotation!r}")
        return _Field(name, "literal", choices=choices)
    kinds: dict[Any, Literal["str", "int", "float", "bool"]] = {
        str: "str",
        int: "int",
        float: "float",
        bool: "bool",
    }
    kind = kinds.get(annotation)
    allowed = {
        "str": {"pattern", "min_length", "max_length"},
        "int": {"ge", "le"},
        "float": {"finite"},
        "bool": set(),
    }
    if kind is None or not set(spec) <= allowed[kind]:
        raise Unsupported(f"{where}: {annotation!r} with {metadata!r}")
    if kind == "int":
        # The fast path holds ints as a signed 64-bit long; wider ones go strict.
        spec["ge"] = max(spec.get("ge", LONG_MIN), LONG_MIN)
        spec["le"] = min(spec.get("le", LONG_MAX), LONG_MAX)
    return _Field(name, kind, **spec)


def model_fields(model: type[Event]) -> list[_Field]:
    """The fast path's view of every field of `model`.

    Args:
        model: an event model (strict, unknown fields ignored, no custom validators).

    Returns:
        One `_Field` per model field, in the model's order.

    Raises:
        Unsupported: the model or one of its fields has something the fast path cannot
            mirror exactly (the message names it).
    """
    config = model.model_config
    if config.get("strict") is not True or config.get("extra") not in (None, "ignore"):
        raise Unsupported(f"{model.__name__}: not strict with unknown fields ignored")
    decorators = model.__pydantic_decorators__
    if decorators.field_validators or decorators.model_validators or decorators.validators:
        raise Unsupported(f"{model.__name__}: custom validators")
    fields: list[_Field] = []
    for name, info in model.model_fields.items():
        where = f"{model.__name__}.{name}"
        if info.alias is not None or info.validation_alias is not None:
            raise Unsupported(f"{where}: an alias")
        annotation, optional = _optional(info.annotation)
        if info.is_required() == optional or (not info.is_required() and info.default is not None):
            # A required optional, or a default other than null: not mirrored.
            raise Unsupported(f"{where}: required={info.is_required()}, default={info.default!r}")
        annotation, metadata = _peel(annotation, list(info.metadata))
        is_list = typing.get_origin(annotation) is list
        if is_list:
            if metadata:
                raise Unsupported(f"{where}: list constraints {metadata!r}")
            (element,) = typing.get_args(annotation)
            if _optional(element)[1]:
                raise Unsupported(f"{where}: null list elements")
            scalar = _scalar(name, element, [], where)
        else:
            scalar = _scalar(name, annotation, metadata, where)
        if is_list and scalar.kind == "time":
            raise Unsupported(f"{where}: a list of times")
        fields.append(replace(scalar, is_list=is_list, optional=optional))
    return fields


def _struct_type(f: _Field) -> Any:
    base: Any
    if f.kind == "literal":
        base = Literal[f.choices]  # type: ignore[valid-type]
    elif f.kind == "int":
        base = Annotated[int, msgspec.Meta(ge=f.ge, le=f.le)]
    else:
        base = {"str": str, "time": str, "float": float, "bool": bool}[f.kind]
    if f.is_list:
        base = list[base]  # type: ignore[valid-type]
    return base | None if f.optional else base


def struct_for(
    model: type[Event], fields: Sequence[_Field], forbid_unknown: bool = False
) -> type[msgspec.Struct]:
    """A msgspec struct with the model's fields and JSON types (times as text).

    Args:
        model: the event model.
        fields: its fields (`model_fields`).
        forbid_unknown: refuse records with other fields (the model ignores them).

    Returns:
        The struct type.
    """
    spec = [
        (f.name, _struct_type(f), None) if f.optional else (f.name, _struct_type(f)) for f in fields
    ]
    name = f"{model.__name__}{'Exact' if forbid_unknown else 'Fast'}"
    # gc=False: a struct of strings, numbers and lists of them holds no cycle, and the
    # collector walking every decoded struct cost more than decoding them (big sink heaps).
    return msgspec.defstruct(
        name, spec, kw_only=True, forbid_unknown_fields=forbid_unknown, gc=False
    )


@dataclass
class Vouched:
    """What the fast path made of a list of record values."""

    # Model columns (the table's Arrow types) of the vouched records, in input order.
    rows: pa.RecordBatch
    # Positions in the input of those rows.
    index: np.ndarray
    # Positions in the input of the records left to the strict model.
    strict: list[int] = field(default_factory=list)


class FastDecoder:
    """Decodes many records of one model at once; see the module docstring.

    Args:
        model: the topic's event model.
        schema: the Iceberg table's Arrow schema (columns are built in its types).
        max_text_bytes: `decode.max_text_bytes`; longer records are judged strictly.

    Raises:
        Unsupported: the model cannot be mirrored (use `FastDecoder.for_model` to get None).
    """

    def __init__(self, model: type[Event], schema: pa.Schema, max_text_bytes: int) -> None:
        self.model = model
        fields = {f.name: f for f in model_fields(model)}
        missing = [n for n in fields if n not in schema.names]
        if missing:
            raise Unsupported(f"{model.__name__}: table has no column {missing}")
        # Columns in the table's order, as `arrow_rows.model_columns` builds them.
        self.fields = [fields[f.name] for f in schema if f.name in fields]
        self.names = [f.name for f in self.fields]
        self.schema = pa.schema([schema.field(n) for n in self.names])
        for f in self.fields:
            narrow = f.kind == "int" and self.schema.field(f.name).type == pa.int32()
            if narrow and (f.ge is None or f.le is None or f.ge < -(2**31) or f.le > 2**31 - 1):
                raise Unsupported(f"{model.__name__}.{f.name}: int column, long bounds")
        # Records with exactly the model's fields take the first; the rest the second.
        self.exact = msgspec.json.Decoder(struct_for(model, self.fields, forbid_unknown=True))
        self.lenient = msgspec.json.Decoder(struct_for(model, self.fields))
        self.max_text_bytes = max_text_bytes
        self.time_field = model.time_field
        self._getters = [attrgetter(n) for n in self.names]

    @classmethod
    def for_model(
        cls, model: type[Event], schema: pa.Schema, max_text_bytes: int
    ) -> FastDecoder | None:
        """The fast decoder, or None (logged once) when the model cannot be mirrored."""
        try:
            return cls(model, schema, max_text_bytes)
        except Unsupported as exc:
            log.info("no fast decode for %s (every record decoded strictly): %s", model, exc)
            return None

    def vouch(self, values: Sequence[bytes | None], window_us: tuple[int, int]) -> Vouched:
        """Decode `values`; the records it cannot vouch for are listed in `strict`.

        Args:
            values: record values, in offset order.
            window_us: the event-time window (epoch µs, inclusive) the strict path uses now.

        Returns:
            The vouched rows with their input positions, and the positions left to the
            strict model (to be decoded by `streams.decode.parse`).
        """
        structs, taken, strict = self._decode(values)
        if not structs:
            empty = pa.RecordBatch.from_pylist([], schema=self.schema)
            return Vouched(empty, np.empty(0, np.int64), strict)
        ok = np.ones(len(structs), dtype=bool)
        arrays = [
            self._column(f, list(map(getter, structs)), ok, window_us)
            for f, getter in zip(self.fields, self._getters, strict=True)
        ]
        rows = pa.RecordBatch.from_arrays(arrays, schema=self.schema)
        index = np.asarray(taken, dtype=np.int64)
        if not ok.all():
            keep = np.flatnonzero(ok)
            strict = sorted(strict + index[~ok].tolist())
            rows, index = rows.take(pa.array(keep)), index[keep]
        return Vouched(rows, index, strict)

    def _decode(self, values: Sequence[bytes | None]) -> tuple[list[Any], list[int], list[int]]:
        """Structs of the records msgspec can take, their positions, and the rest's."""
        limit = self.max_text_bytes
        # Empty, or over the size where the strict path checks each text's bytes.
        odd = [not value or len(value) > limit for value in values]
        strict = [i for i, o in enumerate(odd) if o] if any(odd) else []
        taken = [i for i, o in enumerate(odd) if not o] if strict else list(range(len(values)))
        # The rest are non-empty bytes.
        plain = typing.cast(Sequence[bytes], values)
        good = [plain[i] for i in taken] if strict else plain
        # Every field known: msgspec has read (and UTF-8-checked) every byte of them.
        structs = _decode_all(self.exact, good)
        if structs is not None:
            return structs, taken, strict
        # Unknown fields, or a bad record: what msgspec would skip unread is checked first.
        unread = self._unread_risk(good)
        strict += [taken[j] for j in np.flatnonzero(unread).tolist()]
        taken = [taken[j] for j in np.flatnonzero(~unread).tolist()]
        structs = _decode_all(self.lenient, [plain[i] for i in taken])
        if structs is None:  # one at a time
            structs, kept = [], []
            for i in taken:
                struct = _decode_one(self.lenient, plain[i])
                if struct is None:
                    strict.append(i)
                else:
                    structs.append(struct)
                    kept.append(i)
            taken = kept
        return structs, taken, sorted(strict)

    def _unread_risk(self, values: Sequence[bytes]) -> np.ndarray:
        """Records that may hold, in fields msgspec skips, what pydantic refuses: bytes that
        are not UTF-8, or nesting past its recursion limit (over `MAX_BRACKETS` brackets)."""
        try:
            text = pa.array(values, pa.string())  # checks UTF-8 in one pass
        except pa.ArrowException:
            return np.array([not _plain(value) for value in values], dtype=bool)
        brackets = pc.add(pc.count_substring(text, "["), pc.count_substring(text, "{"))
        risky: np.ndarray = np.asarray(brackets) > MAX_BRACKETS
        return risky

    def _column(
        self, f: _Field, values: Sequence[Any], ok: np.ndarray, window_us: tuple[int, int]
    ) -> pa.Array:
        target = self.schema.field(f.name).type
        if f.kind != "time":
            array = pa.array(values, type=target)
        else:
            array = pa.array(values, type=pa.list_(pa.string()) if f.is_list else pa.string())
        flat = pc.list_flatten(array) if f.is_list else array
        bad: list[pa.Array | np.ndarray] = []
        if f.kind == "str":
            if f.pattern is not None:
                bad.append(pc.invert(pc.match_substring_regex(flat, f.pattern)))
            if f.min_length is not None or f.max_length is not None:
                length = pc.utf8_length(flat)
                if f.min_length is not None:
                    bad.append(pc.less(length, f.min_length))
                if f.max_length is not None:
                    bad.append(pc.greater(length, f.max_length))
        elif f.kind == "float" and f.finite:
            bad.append(pc.invert(pc.is_finite(flat)))
        elif f.kind == "time":
            times, wrong = self._times(array, f.name == self.time_field, window_us)
            bad.append(wrong)
            array = times.cast(target)
        for mask in bad:
            hits = mask if isinstance(mask, np.ndarray) else np.asarray(pc.fill_null(mask, False))
            if hits.any():
                rows = np.asarray(pc.list_parent_indices(array))[hits] if f.is_list else hits
                ok[rows] = False
        return array

    def _times(
        self, text: pa.Array, is_event_time: bool, window_us: tuple[int, int]
    ) -> tuple[pa.Array, np.ndarray]:
        """UTC timestamps of RFC 3339 text; mask of those not vouched for."""
        plain = pc.fill_null(pc.match_substring_regex(text, TIME_PATTERN), True)
        wrong = ~np.asarray(plain)
        if wrong.any():
            text = pc.if_else(plain, text, pa.scalar(None, pa.string()))
        try:
            times = text.cast(_TIMESTAMP)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            # A date that does not exist (2026-02-30): find it, leave it to pydantic.
            parsed = []
            for i, value in enumerate(text.to_pylist()):
                try:
                    parsed.append(pa.array([value], pa.string()).cast(_TIMESTAMP)[0].value)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    parsed.append(None)
                    wrong[i] = True
            times = pa.array(parsed, pa.int64()).cast(_TIMESTAMP)
        micros = np.asarray(pc.fill_null(times.cast(pa.int64()), 0))
        valid = ~np.asarray(times.is_null())
        earliest, latest = window_us if is_event_time else (MIN_TIME_US, MAX_TIME_US)
        earliest, latest = max(earliest, MIN_TIME_US), min(latest, MAX_TIME_US)
        wrong |= valid & ((micros < earliest) | (micros > latest))
        return times, wrong


def _plain(value: bytes) -> bool:
    if value.count(b"[") + value.count(b"{") > MAX_BRACKETS:
        return False
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)


def _decode_all(decoder: msgspec.json.Decoder[Any], values: Sequence[bytes]) -> list[Any] | None:
    """Every value decoded, or None if any does not decode."""
    decode = decoder.decode
    try:
        return [decode(value) for value in values]
    except _DECODE_ERRORS:
        return None


def _decode_one(decoder: msgspec.json.Decoder[Any], value: bytes) -> Any | None:
    try:
        return decoder.decode(value)
    except _DECODE_ERRORS:
        return None


def merge_rows(
    schema: pa.Schema,
    vouched: Vouched,
    strict_events: Sequence[Event],
    strict_index: Sequence[int],
) -> tuple[pa.RecordBatch, np.ndarray]:
    """The vouched rows and the strict path's accepted events, back in input order.

    Args:
        schema: the model columns' Arrow schema (`FastDecoder.schema`).
        vouched: the fast path's rows.
        strict_events: events the strict model accepted.
        strict_index: their input positions.

    Returns:
        The rows and their input positions, ascending.
    """
    if not strict_events:
        return vouched.rows, vouched.index
    strict_rows = model_columns(schema, strict_events)
    if not vouched.rows.num_rows:
        return strict_rows, np.asarray(strict_index, dtype=np.int64)
    index = np.concatenate([vouched.index, np.asarray(strict_index, dtype=np.int64)])
    order = np.argsort(index, kind="stable")
    both = pa.Table.from_batches([vouched.rows, strict_rows]).combine_chunks()
    rows = both.take(pa.array(order)).combine_chunks().to_batches()[0]
    return rows, index[order]
