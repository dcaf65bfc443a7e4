"""Turn decoded events into an Arrow table shaped exactly like the Iceberg table."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter

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
    model_columns = [n for n in schema.names if not n.startswith("_")]
    columns: dict[str, Sequence[object]] = {}
    if len(model_columns) > 1 and events:
        # One C-level attrgetter per row and a transpose: ~3x faster than getattr per cell.
        rows = map(attrgetter(*model_columns), events)
        columns.update(zip(model_columns, zip(*rows, strict=True), strict=True))
    else:
        columns.update({n: [getattr(e, n) for e in events] for n in model_columns})
    columns["_kafka_partition"] = [p.partition for p in positions]
    columns["_kafka_offset"] = [p.offset for p in positions]
    columns["_batch_id"] = [batch_id] * len(events)
    columns["_ingested_at"] = [ingested_at] * len(events)
    return pa.Table.from_pydict({n: columns[n] for n in schema.names}, schema=schema)
