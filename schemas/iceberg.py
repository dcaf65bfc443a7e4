"""Iceberg schemas and partition specs, built from the registry (never by hand)."""

from __future__ import annotations

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (
    BooleanType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    ListType,
    LongType,
    NestedField,
    PrimitiveType,
    StringType,
    TimestamptzType,
)

from schemas.registry import FieldSpec, Registry, TableEntry

_PRIMITIVES: dict[str, PrimitiveType] = {
    "boolean": BooleanType(),
    "int": IntegerType(),
    "long": LongType(),
    "float": FloatType(),
    "double": DoubleType(),
    "string": StringType(),
    "timestamptz": TimestamptzType(),
}

# Partition field ids start at 1000 in Iceberg's spec.
PARTITION_FIELD_ID = 1000


def field_type(spec: FieldSpec) -> IcebergType:
    if spec.type == "list":
        assert spec.element_id is not None and spec.element_type is not None
        return ListType(
            element_id=spec.element_id,
            element_type=_PRIMITIVES[spec.element_type],
            element_required=bool(spec.element_required),
        )
    return _PRIMITIVES[spec.type]


def nested_field(spec: FieldSpec) -> NestedField:
    return NestedField(
        field_id=spec.id, name=spec.name, field_type=field_type(spec), required=spec.required
    )


def iceberg_schema(entry: TableEntry, version: int | None = None) -> Schema:
    """The schema of `version` (default: the current one)."""
    chosen = entry.current if version is None else entry.versions[version - 1]
    return Schema(*(nested_field(f) for f in chosen.fields))


def partition_spec(entry: TableEntry) -> PartitionSpec:
    source = entry.current.by_name()[entry.partition_field]
    return PartitionSpec(
        PartitionField(
            source_id=source.id,
            field_id=PARTITION_FIELD_ID,
            transform=DayTransform(),
            name=f"{entry.partition_field}_day",
        )
    )


def table_entry(table: str, registry: Registry | None = None) -> TableEntry:
    registry = registry or Registry.load()
    try:
        return registry.tables[table]
    except KeyError:
        raise KeyError(
            f"table {table!r} is not in schemas/registry.json; known: "
            f"{', '.join(sorted(registry.tables))}"
        ) from None
