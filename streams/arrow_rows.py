"""Turn decoded events into an Arrow table shaped exactly like the Iceberg table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pyarrow as pa
from pyiceberg.table import Table

from schemas.base import Event


class SourcePosition:
    """Where a row came from in Kafka."""

    __slots__ = ("offset", "partition")

    def __init__(self, partition: int, offset: int) -> None:
        self.partition = partition
        self.offset = offset


def to_arrow(
    table: Table,
    events: Sequence[Event],
    positions: Sequence[SourcePosition],
    batch_id: str,
    ingested_at: datetime,
) -> pa.Table:
    """Columns by name from the table's own schema (pyiceberg renumbers ids on create)."""
    schema = table.schema().as_arrow()
    columns: dict[str, list[object]] = {name: [] for name in schema.names}
    model_columns = [n for n in schema.names if not n.startswith("_")]
    for event, position in zip(events, positions, strict=True):
        for name in model_columns:
            columns[name].append(getattr(event, name, None))
        columns["_kafka_partition"].append(position.partition)
        columns["_kafka_offset"].append(position.offset)
        columns["_batch_id"].append(batch_id)
        columns["_ingested_at"].append(ingested_at)
    return pa.Table.from_pydict(columns, schema=schema)
