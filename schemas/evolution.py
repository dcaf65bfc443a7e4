"""Which schema changes are additive, and the registry's `check` / `register` verbs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from schemas.base import Event
from schemas.registry import (
    WIDENINGS,
    FieldShape,
    FieldSpec,
    Registry,
    SchemaVersion,
    TableEntry,
    assign_ids,
    model_shapes,
)


class SchemaEvolutionError(ValueError):
    """A schema change that is not additive; the message lists every offending field."""


class _Shaped(Protocol):
    name: str
    type: str
    required: bool
    element_type: str | None
    element_required: bool | None


def _type_change(old: str | None, new: str | None) -> bool:
    return old == new or (old, new) in WIDENINGS


def evolution_problems(table: str, old: Sequence[_Shaped], new: Sequence[_Shaped]) -> list[str]:
    """Everything that makes `new` more than an additive change of `old`."""
    problems = []
    new_by_name = {f.name: f for f in new}
    old_names = {f.name for f in old}
    for before in old:
        after = new_by_name.get(before.name)
        where = f"{table}.{before.name}"
        if after is None:
            problems.append(
                f"{where}: removed or renamed; readers of old snapshots break. "
                "Keep the field (make it optional) and add a new one instead"
            )
            continue
        if before.type != after.type and not _type_change(before.type, after.type):
            problems.append(
                f"{where}: type {before.type} -> {after.type} is not a widening "
                "(allowed: int -> long, float -> double)"
            )
        if before.element_type != after.element_type and not _type_change(
            before.element_type, after.element_type
        ):
            problems.append(
                f"{where}: element type {before.element_type} -> {after.element_type} "
                "is not a widening"
            )
        if not before.required and after.required:
            problems.append(f"{where}: optional -> required breaks existing rows; keep it optional")
        if before.element_required is False and after.element_required:
            problems.append(f"{where}: optional elements -> required elements is not additive")
    for after in new:
        if after.name not in old_names and after.required:
            problems.append(
                f"{table}.{after.name}: a new field must be optional (old rows have no value)"
            )
    return problems


def _id_problems(table: str, entry: TableEntry) -> list[str]:
    problems = []
    first_name_of_id: dict[int, str] = {}
    first_id_of_name: dict[str, int] = {}
    for version in entry.versions:
        seen: dict[int, str] = {}
        for field_id, name in version.ids():
            where = f"{table} v{version.version}"
            if field_id in seen:
                problems.append(
                    f"{where}: field id {field_id} is used by both {seen[field_id]!r} and "
                    f"{name!r}; give the newer field an id above last_field_id"
                )
            seen[field_id] = name
            if field_id > entry.last_field_id:
                problems.append(
                    f"{where}: field id {field_id} ({name}) is above last_field_id "
                    f"{entry.last_field_id}"
                )
            earlier = first_name_of_id.setdefault(field_id, name)
            if earlier != name:
                problems.append(
                    f"{where}: field id {field_id} reused: it named {earlier!r} before, "
                    f"now {name!r}. Ids are never reused; take a new one"
                )
            earlier_id = first_id_of_name.setdefault(name, field_id)
            if earlier_id != field_id:
                problems.append(
                    f"{where}: {name!r} renumbered from id {earlier_id} to {field_id}; "
                    "ids are stable for a field's whole life"
                )
    return problems


def check(registry: Registry, models: Iterable[type[Event]]) -> list[str]:
    """Every problem with the registry and with the models against it; empty means OK."""
    problems: list[str] = []
    for table, entry in registry.tables.items():
        problems += _id_problems(table, entry)
        for older, newer in zip(entry.versions, entry.versions[1:], strict=False):
            problems += [
                f"v{older.version} -> v{newer.version}: {p}"
                for p in evolution_problems(table, older.fields, newer.fields)
            ]
    for model in models:
        registered = registry.tables.get(model.table)
        if registered is None:
            problems.append(
                f"{model.table}: model {model.__name__} has no registry entry; "
                "run `freshlabel schemas register`"
            )
            continue
        shapes = model_shapes(model)
        current = registered.current.fields
        not_additive = evolution_problems(model.table, current, shapes)
        if not_additive:
            problems += [f"model {model.__name__}: {p}" for p in not_additive]
        elif _shape_set(current) != _shape_set(shapes):
            problems.append(
                f"{model.table}: model {model.__name__} changed additively but the registry "
                "was not updated; run `freshlabel schemas register` and commit registry.json"
            )
    return problems


def _shape_set(fields: Sequence[_Shaped]) -> set[tuple[object, ...]]:
    return {(f.name, f.type, f.required, f.element_type, f.element_required) for f in fields}


def _evolved_version(entry: TableEntry, shapes: list[FieldShape]) -> tuple[SchemaVersion, int]:
    by_name = {s.name: s for s in shapes}
    kept = [
        FieldSpec(id=f.id, element_id=f.element_id, **by_name[f.name].model_dump())
        for f in entry.current.fields
    ]
    known = {f.name for f in kept}
    last_id = entry.last_field_id
    added: list[FieldSpec] = []
    # pyiceberg's add_column numbers each new column, then its nested element, in turn.
    for shape in shapes:
        if shape.name in known:
            continue
        (spec,), last_id = assign_ids([shape], last_id)
        added.append(spec)
    return SchemaVersion(version=entry.current.version + 1, fields=kept + added), last_id


def register(registry: Registry, models: Iterable[type[Event]]) -> list[str]:
    """Record new tables and additive changes in the registry; returns what changed."""
    changes = []
    for model in models:
        shapes = model_shapes(model)
        entry = registry.tables.get(model.table)
        if entry is None:
            fields, last_id = assign_ids(shapes, 0)
            registry.tables[model.table] = TableEntry(
                model=f"{model.__module__}.{model.__name__}",
                partition_field=model.time_field,
                last_field_id=last_id,
                versions=[SchemaVersion(version=1, fields=fields)],
            )
            changes.append(f"{model.table}: registered v1 with {len(fields)} fields")
            continue
        problems = evolution_problems(model.table, entry.current.fields, shapes)
        if problems:
            raise SchemaEvolutionError("\n".join(problems))
        if _shape_set(entry.current.fields) == _shape_set(shapes):
            continue
        version, last_id = _evolved_version(entry, shapes)
        entry.versions.append(version)
        entry.last_field_id = last_id
        changes.append(f"{model.table}: registered v{version.version}")
    return changes
