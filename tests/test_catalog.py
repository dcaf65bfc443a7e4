"""Iceberg tables from the registry on a real SQL catalog: ids, partitions, evolution."""

from __future__ import annotations

import json
import multiprocessing
from typing import Any, ClassVar

import pytest
from pyiceberg.types import ListType

from infra.catalog import FieldIdMismatchError, ensure_namespace, ensure_table, open_catalog
from infra.config import Settings
from schemas import RelevanceLabel
from schemas.evolution import SchemaEvolutionError, register
from schemas.registry import Registry


class _LabelV2(RelevanceLabel):
    table: ClassVar[str] = "labels"
    calibrated_score: float | None = None
    reasons: list[str] | None = None


class _LabelBroken(RelevanceLabel):
    table: ClassVar[str] = "labels"
    label_scale: str  # type: ignore[assignment]


def test_tables_get_registry_ids_and_day_partitions(settings: Settings) -> None:
    catalog = open_catalog(settings)
    ensure_namespace(catalog, "freshlabel")
    registry = Registry.load()
    for name, entry in registry.tables.items():
        table = ensure_table(catalog, "freshlabel", name, registry)
        ids = {f.name: f.field_id for f in table.schema().fields}
        assert ids == {f.name: f.id for f in entry.current.fields}
        (field,) = table.spec().fields
        assert str(field.transform) == "day"
        assert table.schema().find_field(field.source_id).name == entry.partition_field
        assert table.properties["commit.manifest-merge.enabled"] == "true"


def test_additive_evolution_is_applied_with_stable_ids(settings: Settings) -> None:
    catalog = open_catalog(settings)
    ensure_namespace(catalog, "freshlabel")
    registry = Registry.load()
    ensure_table(catalog, "freshlabel", "labels", registry)
    register(registry, [_LabelV2])
    table = ensure_table(catalog, "freshlabel", "labels", registry)
    current = registry.tables["labels"].current.by_name()
    assert table.schema().find_field("calibrated_score").field_id == current["calibrated_score"].id
    reasons = table.schema().find_field("reasons")
    assert reasons.field_id == current["reasons"].id
    assert isinstance(reasons.field_type, ListType)
    assert reasons.field_type.element_id == current["reasons"].element_id
    # and an untouched registry still matches the evolved table's old fields
    assert table.schema().find_field("score").field_id == current["score"].id


def test_a_new_table_gets_the_ids_of_one_that_lived_through_the_change(
    settings: Settings,
) -> None:
    catalog = open_catalog(settings)
    ensure_namespace(catalog, "freshlabel")
    registry = Registry.load()
    register(registry, [_LabelV2])  # adds a scalar and a list after the current version
    assert len(registry.tables["labels"].versions) >= 3  # v1, v2 (impression_time), this one
    fresh = ensure_table(catalog, "freshlabel", "labels", registry)
    ids = {f.name: f.field_id for f in fresh.schema().fields}
    current = registry.tables["labels"].current
    assert ids == {f.name: f.id for f in current.fields}
    reasons = fresh.schema().find_field("reasons").field_type
    assert isinstance(reasons, ListType)
    assert reasons.element_id == current.by_name()["reasons"].element_id


def test_non_additive_change_is_refused(settings: Settings) -> None:
    with pytest.raises(SchemaEvolutionError, match="label_scale: type long -> string"):
        register(Registry.load(), [_LabelBroken])


def test_foreign_table_with_other_ids_is_detected(settings: Settings) -> None:
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField, StringType

    catalog = open_catalog(settings)
    ensure_namespace(catalog, "freshlabel")
    catalog.create_table(
        "freshlabel.pin_captions",
        schema=Schema(NestedField(1, "caption", StringType(), required=False)),
    )
    with pytest.raises(FieldIdMismatchError, match="created or evolved outside freshlabel"):
        ensure_table(catalog, "freshlabel", "pin_captions")


def _ensure_at_barrier(settings: Settings, barrier: Any, results: Any) -> None:
    catalog = open_catalog(settings)
    barrier.wait()
    try:
        table = ensure_table(catalog, "freshlabel", "impressions_enriched")
        results.put(("ok", {f.name: f.field_id for f in table.schema().fields}))
    except Exception as exc:  # reported to the test, which names it
        results.put(("error", f"{type(exc).__name__}: {exc}"))


@pytest.mark.slow  # four spawned processes, each importing pyiceberg: seconds
def test_processes_starting_together_all_get_the_one_table(settings: Settings) -> None:
    # Sinks scaled out on a new table start at once: every one must end up with the table,
    # not die because another created (or evolved) it first.
    ensure_namespace(open_catalog(settings), "freshlabel")
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_ensure_at_barrier, args=(settings, barrier, results)) for _ in range(4)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    assert [o for o in outcomes if o[0] != "ok"] == []
    assert len({json.dumps(o[1], sort_keys=True) for o in outcomes}) == 1
