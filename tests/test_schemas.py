from __future__ import annotations

import json
import shutil
import types
import typing
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pytest
from pydantic import ValidationError

from infra.config import DERIVED_TOPICS, EVENT_TOPICS
from schemas import EnrichedImpression, Impression, PinContent, RelevanceLabel
from schemas.base import ID_MAX_CHARS, INT_MAX, INT_MIN, LONG_MAX, LONG_MIN, Event
from schemas.evolution import SchemaEvolutionError, check, register
from schemas.registry import REGISTRY_PATH, IcebergType, Registry, model_shapes
from schemas.topics import MODELS
from streams.samples import sample_events
from tests.conftest import freshlabel
from tests.helpers import LABEL_JSON


def test_committed_registry_matches_models() -> None:
    assert check(Registry.load(), MODELS) == []


@pytest.mark.parametrize(
    ("query", "title"),
    [
        ("receta de paella", "Paella valenciana con judías"),
        ("weihnachtsplätzchen", "Butterplätzchen für die Adventszeit"),
        ("抹茶 ケーキ", "抹茶のパウンドケーキ"),
    ],
)
def test_text_in_any_language_round_trips(query: str, title: str) -> None:
    at = datetime(2026, 11, 20, 12, tzinfo=timezone(timedelta(hours=9)))
    imp = Impression(
        impression_id="i",
        request_id="r",
        user_id="u",
        query=query,
        pin_id="p",
        position=1,
        country="JP",
        locale="ja-JP",
        event_time=at,
    )
    back = Impression.model_validate_json(imp.to_bytes())
    assert back.query == query
    assert back.event_time == at and back.event_time.tzinfo == UTC
    assert b'"event_time":"2026-11-20T03:00:00.000000Z"' in imp.to_bytes()
    pin = PinContent(pin_id="p", title=title, updated_at=at)
    assert PinContent.model_validate_json(pin.to_bytes()).title == title


def test_models_are_strict() -> None:
    good = {
        "impression_id": "i",
        "request_id": "r",
        "user_id": "u",
        "query": "q",
        "pin_id": "p",
        "position": 1,
        "country": "US",
        "locale": "en-US",
        "event_time": "2026-11-20T12:00:00Z",
    }
    Impression.model_validate_json(json.dumps(good))
    for bad in (
        {"position": "1"},
        {"pin_id": 7},
        {"event_time": "2026-11-20T12:00:00"},
        {"position": 0},
    ):
        with pytest.raises(ValidationError):
            Impression.model_validate_json(json.dumps({**good, **bad}))


def _copy_registry(tmp_path: Path) -> Path:
    path = tmp_path / "registry.json"
    shutil.copy(REGISTRY_PATH, path)
    return path


def test_cli_check_accepts_committed_registry(tmp_path: Path) -> None:
    from infra.config import Settings

    result = freshlabel(Settings(state_dir=tmp_path), "schemas", "check")
    assert result.returncode == 0, result.stderr


def test_cli_check_refuses_field_id_reuse(tmp_path: Path) -> None:
    from infra.config import Settings

    path = _copy_registry(tmp_path)
    data = json.loads(path.read_text())
    fields = data["tables"]["impressions"]["versions"][-1]["fields"]
    fields[1]["id"] = fields[0]["id"]  # request_id takes impression_id's id
    path.write_text(json.dumps(data))
    result = freshlabel(Settings(state_dir=tmp_path), "schemas", "check", "--registry", str(path))
    assert result.returncode == 1
    assert "field id 1 is used by both 'impression_id' and 'request_id'" in result.stderr


def test_cli_check_refuses_narrowing_type_change(tmp_path: Path) -> None:
    from infra.config import Settings

    path = _copy_registry(tmp_path)
    data = json.loads(path.read_text())
    entry = data["tables"]["labels"]
    newer = json.loads(json.dumps(entry["versions"][-1]))
    newer["version"] += 1
    for field in newer["fields"]:
        if field["name"] == "score":
            field["type"] = "float"  # double -> float loses precision
    entry["versions"].append(newer)
    path.write_text(json.dumps(data))
    result = freshlabel(Settings(state_dir=tmp_path), "schemas", "check", "--registry", str(path))
    assert result.returncode == 1
    assert "labels.score: type double -> float is not a widening" in result.stderr


def test_check_refuses_renumbered_id() -> None:
    registry = Registry.load()
    entry = registry.tables["pin_content"]
    newer = entry.current.model_copy(deep=True)
    newer.version += 1
    newer.fields[2].id = entry.last_field_id + 1
    entry.last_field_id += 1
    entry.versions.append(newer)
    problems = check(registry, MODELS)
    assert any("renumbered" in p for p in problems), problems


class _LabelV2(RelevanceLabel):
    """An additive change: one new optional field."""

    table: ClassVar[str] = "labels"
    calibrated_score: float | None = None


class _LabelNarrowed(RelevanceLabel):
    table: ClassVar[str] = "labels"
    score: Annotated[float, IcebergType("float")]  # type: ignore[assignment]


class _LabelRequiredAdded(RelevanceLabel):
    table: ClassVar[str] = "labels"
    teacher_run: str


def test_register_adds_optional_field_with_next_id() -> None:
    registry = Registry.load()
    before = registry.tables["labels"].last_field_id
    versions = len(registry.tables["labels"].versions)
    changes = register(registry, [_LabelV2])
    entry = registry.tables["labels"]
    assert changes == [f"labels: registered v{versions + 1}"]
    new = entry.current.by_name()["calibrated_score"]
    assert new.id == before + 1 and not new.required
    # every old field keeps its id
    old = {f.name: f.id for f in entry.versions[0].fields}
    assert all(entry.current.by_name()[n].id == i for n, i in old.items())
    assert check(registry, [_LabelV2]) == []


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (_LabelNarrowed, "type double -> float is not a widening"),
        (_LabelRequiredAdded, "a new field must be optional"),
    ],
)
def test_register_refuses_non_additive(model: type[RelevanceLabel], message: str) -> None:
    with pytest.raises(SchemaEvolutionError, match=message):
        register(Registry.load(), [model])
    assert any(message in p for p in check(Registry.load(), [model]))


# --- Values every event model refuses or accepts, checked against the Iceberg types -------


def _samples() -> dict[type[Event], dict[str, Any]]:
    """One valid record (as JSON-ready dicts) of every model a Kafka topic carries."""
    by_model: dict[type[Event], dict[str, Any]] = {}
    for event in sample_events():
        by_model.setdefault(type(event), json.loads(event.to_bytes()))
    impression = by_model[Impression]
    by_model[EnrichedImpression] = {
        **impression,
        "title": "t",
        "board_titles": ["a", "b"],
        "top_queries": ["q"],
        "content_updated_at": "2026-11-19T00:00:00Z",
    }
    by_model[RelevanceLabel] = {
        **LABEL_JSON,
        "labeled_at": "2026-11-20T12:00:00Z",
        "input_hash": "abc",
        "impression_time": "2026-11-20T11:00:00Z",
    }
    assert set(by_model) == set(TOPIC_MODELS), set(TOPIC_MODELS) - set(by_model)
    return by_model


TOPIC_MODELS = [m for m in MODELS if m.topic in EVENT_TOPICS + DERIVED_TOPICS]
SAMPLES = _samples()


def _fields(model: type[Event], *kinds: type) -> list[str]:
    shapes = {s.name: s for s in model_shapes(model)}
    wanted = {bool: "boolean", int: ("int", "long"), float: ("float", "double"), str: "string"}
    names = []
    for name in model.model_fields:
        shape = shapes[name]
        kind = shape.element_type if shape.type == "list" else shape.type
        if any(kind in wanted[k] for k in kinds):
            names.append(name)
    return names


def _set(model: type[Event], name: str, value: Any) -> dict[str, Any]:
    record = dict(SAMPLES[model])
    is_list = typing.get_origin(_unwrap(model.model_fields[name].annotation)) is list
    record[name] = [value] if is_list else value
    return record


def _unwrap(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return (
        args[0] if typing.get_origin(annotation) in (typing.Union, types.UnionType) else annotation
    )


def ids_of(model: type[Event]) -> set[str]:
    """Id and key fields: *_id, the Kafka key and the dedupe key's text fields."""
    keys = {model.key_field, *model.dedupe_key} | {
        n for n in model.model_fields if n.endswith("_id")
    }
    return keys & set(_fields(model, str))


def _refused(model: type[Event], record: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate_json(json.dumps(record))
    return info.value


@pytest.mark.parametrize("model", TOPIC_MODELS, ids=lambda m: m.__name__)
def test_every_sample_is_valid(model: type[Event]) -> None:
    model.model_validate_json(json.dumps(SAMPLES[model]))


@pytest.mark.parametrize("model", TOPIC_MODELS, ids=lambda m: m.__name__)
def test_integers_are_bounded_by_their_iceberg_type(model: type[Event]) -> None:
    # Iceberg long is signed 64-bit and int 32-bit: a bigger value passed the model and
    # then raised OverflowError in the sink's write, on every restart.
    entry = Registry.load().tables[model.table].current.by_name()
    names = _fields(model, int)
    for name in names:
        kind = entry[name].element_type or entry[name].type
        low, high = (INT_MIN, INT_MAX) if kind == "int" else (LONG_MIN, LONG_MAX)
        for outside in (high + 1, low - 1, 2**64):
            errors = _refused(model, _set(model, name, outside)).errors()
            assert errors[0]["loc"][0] == name, errors
        model.model_validate_json(json.dumps(_set(model, name, high)))


@pytest.mark.parametrize("model", TOPIC_MODELS, ids=lambda m: m.__name__)
def test_floats_must_be_finite(model: type[Event]) -> None:
    for name in _fields(model, float):
        for text in ("NaN", "Infinity", "-Infinity", "1e999"):
            raw = json.dumps(_set(model, name, 0.5)).replace("0.5", text, 1)
            with pytest.raises(ValidationError, match="finite"):
                model.model_validate_json(raw)


@pytest.mark.parametrize("model", TOPIC_MODELS, ids=lambda m: m.__name__)
def test_ids_and_keys_refuse_empty_blank_and_control_characters(model: type[Event]) -> None:
    ids = ids_of(model)
    assert ids, model
    for name in sorted(ids):
        if typing.get_origin(model.model_fields[name].annotation) is Literal:
            continue  # a closed set of values (engagement action) cannot be empty
        for bad in ("", "   ", "a\nb", "a\x00b", "x" * (ID_MAX_CHARS + 1)):
            assert _refused(model, _set(model, name, bad)).errors()[0]["loc"][0] == name


@pytest.mark.parametrize("model", TOPIC_MODELS, ids=lambda m: m.__name__)
def test_text_refuses_c0_controls_but_tab_newline_cr(model: type[Event]) -> None:
    for name in _fields(model, str):
        if typing.get_origin(model.model_fields[name].annotation) is Literal:
            continue
        for char in ("\x00", "\x01", "\x1b", "\x1f", "\x0b", "\x0c"):
            assert _refused(model, _set(model, name, f"a{char}b")).errors()[0]["loc"][0] == name
        if name not in ids_of(model):
            model.model_validate_json(json.dumps(_set(model, name, "a\tb\nc\r\nd ü 抹茶")))


@pytest.mark.parametrize(
    "when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "0001-01-01T00:59:59+01:00"]
)
def test_times_that_do_not_exist_in_utc_are_refused_not_raised(when: str) -> None:
    # astimezone(UTC) raised OverflowError ("date value out of range") out of the model.
    error = _refused(Impression, {**SAMPLES[Impression], "event_time": when})
    assert error.errors()[0]["type"] == "datetime_out_of_range"
    assert "outside years 1-9999" in str(error)


@pytest.mark.parametrize(
    ("given", "wire"),
    [
        ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
        ("0999-05-01T10:00:00+02:00", "0999-05-01T08:00:00.000000Z"),
        ("9999-12-31T23:59:59.999999Z", "9999-12-31T23:59:59.999999Z"),
    ],
)
def test_extreme_times_keep_four_digit_years_on_the_wire(given: str, wire: str) -> None:
    # strftime("%Y") wrote year 1 as "1-01-01...", which no reader takes back.
    pin = PinContent.model_validate_json(json.dumps({"pin_id": "p", "updated_at": given}))
    assert json.loads(pin.to_bytes())["updated_at"] == wire
    assert PinContent.model_validate_json(pin.to_bytes()) == pin


@pytest.mark.parametrize("model", TOPIC_MODELS, ids=lambda m: m.__name__)
def test_the_extremes_a_model_accepts_are_written_by_iceberg(
    model: type[Event], tmp_path: Path
) -> None:
    # Whatever validates must append: otherwise one record stops the sink for good.
    from infra.catalog import ensure_namespace, ensure_table, open_catalog
    from infra.config import Settings
    from streams.arrow_rows import SourcePosition, to_arrow

    record = dict(SAMPLES[model])
    for name in _fields(model, int):
        record = {**record, name: _set(model, name, LONG_MAX)[name]}
    for name in _fields(model, str):
        if typing.get_origin(model.model_fields[name].annotation) is Literal:
            continue
        extreme = "é" * ID_MAX_CHARS if name in ids_of(model) else "tab\tline\nü抹茶\r"
        record = {**record, name: _set(model, name, extreme)[name]}
    times = [n for n, f in model.model_fields.items() if "datetime" in str(f.annotation).lower()]
    for name in times:
        if name != model.time_field:
            record[name] = "0001-01-01T00:00:00Z" if name.endswith("_at") else record[name]
    events = [
        model.model_validate_json(json.dumps(record)),
        model.model_validate_json(json.dumps({**record, model.time_field: "9999-12-31T23:59:59Z"})),
    ]
    settings = Settings(state_dir=tmp_path)
    catalog = open_catalog(settings)
    ensure_namespace(catalog, "t")
    table = ensure_table(catalog, "t", model.table)
    rows = to_arrow(
        table, events, [SourcePosition(0, 0), SourcePosition(0, 1)], "b", datetime.now(UTC)
    )
    table.append(rows)
    back = table.refresh().scan().to_arrow().to_pylist()
    assert len(back) == 2
    for name in _fields(model, int):
        assert {r[name] for r in back} == {LONG_MAX}
