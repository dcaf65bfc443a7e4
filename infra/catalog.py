"""Open the Iceberg catalog named by config and keep its tables in step with the registry."""

from __future__ import annotations

from pathlib import Path

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NamespaceAlreadyExistsError,
    NoSuchTableError,
    TableAlreadyExistsError,
)
from pyiceberg.table import Table

from infra.config import Settings
from schemas.iceberg import field_type, iceberg_schema, partition_spec, table_entry
from schemas.registry import Registry, TableEntry

# Large, rare commits stay fast only if manifests are merged and old metadata files go.
TABLE_PROPERTIES = {
    "commit.manifest-merge.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "20",
    "format-version": "2",
}


class FieldIdMismatchError(RuntimeError):
    """The catalog's table numbers a field differently from schemas/registry.json."""


def open_catalog(settings: Settings) -> Catalog:
    cfg = settings.catalog
    props: dict[str, str] = {"warehouse": settings.warehouse, **cfg.properties}
    if cfg.type == "sql":
        props["uri"] = settings.catalog_uri
        if props["uri"].startswith("sqlite:///"):
            Path(props["uri"].removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        warehouse = props["warehouse"]
        if warehouse.startswith("file://"):
            Path(warehouse.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
        return load_catalog(cfg.name, type="sql", **props)
    if not cfg.uri:
        raise ValueError(
            "catalog.type is 'rest' but catalog.uri is empty; set FRESHLABEL_CATALOG__URI"
        )
    return load_catalog(cfg.name, type="rest", uri=cfg.uri, **props)


def ensure_namespace(catalog: Catalog, namespace: str) -> None:
    try:
        catalog.create_namespace(namespace)
    except NamespaceAlreadyExistsError:
        pass


def verify_field_ids(table: Table, entry: TableEntry, identifier: str) -> None:
    actual = {f.name: f.field_id for f in table.schema().fields}
    wrong = [
        f"{f.name}: registry {f.id}, table {actual.get(f.name)}"
        for f in entry.current.fields
        if actual.get(f.name) != f.id
    ]
    if wrong:
        raise FieldIdMismatchError(
            f"{identifier} field ids differ from schemas/registry.json ({'; '.join(wrong)}). "
            "The table was created or evolved outside freshlabel; migrate it or recreate it"
        )


def _evolve(table: Table, entry: TableEntry) -> Table:
    existing = set(table.schema().column_names)
    missing = [f for f in entry.current.fields if f.name not in existing]
    if missing:
        with table.update_schema() as update:
            for spec in missing:
                update.add_column(spec.name, field_type(spec), required=False)
    return table


def ensure_table(
    catalog: Catalog,
    namespace: str,
    name: str,
    registry: Registry | None = None,
    schema_of: str | None = None,
) -> Table:
    """The table `namespace.name`, created or evolved to the registry's current version of
    its own entry (or of `schema_of`, for another table with the same schema). Safe when
    several processes start at once (sinks scaled out on a new table): the one that loses
    the creation, or the evolution, takes the table the winner made."""
    registry = registry or Registry.load()
    entry = table_entry(schema_of or name, registry)
    identifier = f"{namespace}.{name}"
    try:
        table = catalog.load_table(identifier)
    except NoSuchTableError:
        # Created at version 1 and evolved like any older table: Iceberg numbers the fields
        # of a new table in its own order, so creating the current schema directly would
        # give an added field a different id than a table that lived through the change.
        try:
            table = catalog.create_table(
                identifier,
                schema=iceberg_schema(entry, version=1),
                partition_spec=partition_spec(entry),
                properties=TABLE_PROPERTIES,
            )
        except TableAlreadyExistsError:  # another process created it meanwhile
            table = catalog.load_table(identifier)
    try:
        table = _evolve(table, entry)
    except CommitFailedException:  # another process evolved it meanwhile: the same fields
        table = _evolve(catalog.load_table(identifier), entry)
    verify_field_ids(table, entry, identifier)
    return table


def ensure_all_tables(settings: Settings, catalog: Catalog | None = None) -> list[str]:
    catalog = catalog or open_catalog(settings)
    ensure_namespace(catalog, settings.catalog.namespace)
    registry = Registry.load()
    return [
        ensure_table(catalog, settings.catalog.namespace, name, registry).name()[-1]
        for name in registry.tables
    ]
