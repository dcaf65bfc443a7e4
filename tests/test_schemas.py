from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, ClassVar

import pytest
from pydantic import ValidationError

from schemas import Impression, PinContent, RelevanceLabel
from schemas.evolution import SchemaEvolutionError, check, register
from schemas.registry import REGISTRY_PATH, IcebergType, Registry
from schemas.topics import MODELS
from tests.conftest import freshlabel


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
