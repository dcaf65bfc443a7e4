"""Stable Iceberg field ids, kept in a committed registry (schemas/registry.json).

The pydantic models are the source of truth for *which* fields exist and their types; the
registry is the source of truth for each field's numeric id, and keeps every schema
version each table ever had, like Iceberg's own metadata does. Ids are handed out in the
order Iceberg itself assigns them (fields of a struct first, then their nested children;
additions take last_field_id + 1), so a table created or evolved by pyiceberg ends up with
exactly the registered ids, and `catalog.ensure_table` verifies that it did.

Allowed evolution (what `freshlabel schemas check` accepts): new optional fields with new
ids, required -> optional, and the widenings int -> long, float -> double. Anything else
(a removed or renamed field, a narrowed or changed type, a new required field, an id
reused or renumbered) is refused.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, Field
from pydantic.fields import FieldInfo

from schemas.base import Event

REGISTRY_PATH = Path(__file__).with_name("registry.json")

# Columns the Iceberg sink adds to every table: where the row came from, for exactly-once
# replays and audits.
SINK_FIELDS: tuple[tuple[str, str, bool], ...] = (
    ("_kafka_partition", "int", True),
    ("_kafka_offset", "long", True),
    ("_batch_id", "string", True),
    ("_ingested_at", "timestamptz", True),
)

PRIMITIVES = ("boolean", "int", "long", "float", "double", "string", "timestamptz")
WIDENINGS = {("int", "long"), ("float", "double")}


class IcebergType:
    """Annotate a model field to pick a narrower Iceberg type than the default mapping."""

    def __init__(self, name: str) -> None:
        if name not in PRIMITIVES:
            raise ValueError(f"unknown Iceberg primitive {name!r}; use one of {PRIMITIVES}")
        self.name = name


class FieldSpec(BaseModel):
    """One column: a primitive, or a list with its own element id."""

    id: int
    name: str
    type: str
    required: bool
    element_id: int | None = None
    element_type: str | None = None
    element_required: bool | None = None

    def shape(self) -> tuple[Any, ...]:
        return (self.name, self.type, self.required, self.element_type, self.element_required)


class SchemaVersion(BaseModel):
    version: int
    fields: list[FieldSpec]

    def by_name(self) -> dict[str, FieldSpec]:
        return {f.name: f for f in self.fields}

    def ids(self) -> Iterator[tuple[int, str]]:
        for f in self.fields:
            yield f.id, f.name
            if f.element_id is not None:
                yield f.element_id, f"{f.name}.element"


class TableEntry(BaseModel):
    model: str
    partition_field: str
    last_field_id: int
    versions: list[SchemaVersion]

    @property
    def current(self) -> SchemaVersion:
        return self.versions[-1]


class Registry(BaseModel):
    format: Literal[1] = 1
    tables: dict[str, TableEntry] = Field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = REGISTRY_PATH) -> Registry:
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def save(self, path: Path = REGISTRY_PATH) -> None:
        """One field per line, so a diff of the registry reads like a schema change."""
        data = self.model_dump(exclude_none=True)
        lines = ["{", f' "format": {self.format},', ' "tables": {']
        for t, (name, entry) in enumerate(data["tables"].items()):
            lines.append(f"  {json.dumps(name)}: {{")
            for key in ("model", "partition_field", "last_field_id"):
                lines.append(f"   {json.dumps(key)}: {json.dumps(entry[key])},")
            lines.append('   "versions": [')
            for v, version in enumerate(entry["versions"]):
                lines.append(f'    {{"version": {version["version"]}, "fields": [')
                fields = [f"     {json.dumps(f, ensure_ascii=False)}" for f in version["fields"]]
                lines.append(",\n".join(fields))
                lines.append("    ]}" + ("," if v < len(entry["versions"]) - 1 else ""))
            lines.append("   ]")
            lines.append("  }" + ("," if t < len(data["tables"]) - 1 else ""))
        lines += [" }", "}"]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


class FieldShape(BaseModel):
    """A field as a model declares it, before ids are known."""

    name: str
    type: str
    required: bool
    element_type: str | None = None
    element_required: bool | None = None

    def shape(self) -> tuple[Any, ...]:
        return (self.name, self.type, self.required, self.element_type, self.element_required)


def _primitive(annotation: Any, metadata: list[Any], where: str) -> str:
    for item in metadata:
        if isinstance(item, IcebergType):
            return item.name
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extra = typing.get_args(annotation)
        return _primitive(base, list(extra), where)
    if typing.get_origin(annotation) is Literal:
        kinds = {type(v) for v in typing.get_args(annotation)}
        if kinds == {str}:
            return "string"
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "long"
    if annotation is float:
        return "double"
    if annotation is str:
        return "string"
    if annotation is datetime or annotation is AwareDatetime:
        return "timestamptz"
    raise TypeError(f"{where}: no Iceberg type for {annotation!r}; add a mapping in registry.py")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _field_shape(name: str, info: FieldInfo, where: str) -> FieldShape:
    annotation, optional = _unwrap_optional(info.annotation)
    required = info.is_required() and not optional
    if typing.get_origin(annotation) is list:
        (element,) = typing.get_args(annotation)
        element, element_optional = _unwrap_optional(element)
        return FieldShape(
            name=name,
            type="list",
            required=required,
            element_type=_primitive(element, [], f"{where}.{name}[]"),
            element_required=not element_optional,
        )
    return FieldShape(
        name=name,
        type=_primitive(annotation, list(info.metadata), f"{where}.{name}"),
        required=required,
    )


def model_shapes(model: type[Event]) -> list[FieldShape]:
    shapes = [_field_shape(n, i, model.__name__) for n, i in model.model_fields.items()]
    shapes += [FieldShape(name=n, type=t, required=r) for n, t, r in SINK_FIELDS]
    return shapes


def assign_ids(shapes: list[FieldShape], last_field_id: int) -> tuple[list[FieldSpec], int]:
    """Number new fields the way Iceberg does: the struct's fields, then list elements."""
    next_id = last_field_id
    specs: list[FieldSpec] = []
    for shape in shapes:
        next_id += 1
        specs.append(FieldSpec(id=next_id, **shape.model_dump()))
    for spec in specs:
        if spec.type == "list":
            next_id += 1
            spec.element_id = next_id
    return specs, next_id
