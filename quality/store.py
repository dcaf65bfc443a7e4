"""Where the gate's verdicts land: `dq_results` and `<table>_quarantine` in Iceberg.

Idempotent under replay. The sink may crash after the gate wrote but before its own
commit; it then re-reads the same Kafka records, possibly cut into batches differently.
- quarantine: every write replaces the table's rows in the batch's (partition, offset)
  ranges, so a row quarantined by the lost attempt is never there twice;
- dq_results: a batch's results replace earlier ones with the same batch key (table and
  first offset of each partition). The first write of each table in a process, and a
  retried batch, use that overwrite; later batches append (a plain append is cheaper,
  and only a restarted or retrying sink can replay).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import (
    AlwaysFalse,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThanOrEqual,
    Or,
)
from pyiceberg.table import Table
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_incrementing,
)

from infra.catalog import ensure_namespace, ensure_table
from infra.config import Settings
from quality.models import GateOutcome
from schemas.quality import QUARANTINE_TABLES, CheckResult

log = logging.getLogger(__name__)

RESULTS_TABLE = CheckResult.table


def offset_filter(ranges: list[tuple[int, int, int]]) -> BooleanExpression:
    """Rows whose Kafka (partition, offset) falls in any of `ranges`."""
    expression: BooleanExpression = AlwaysFalse()
    for partition, first, last in ranges:
        expression = Or(
            expression,
            And(
                EqualTo("_kafka_partition", partition),
                And(
                    GreaterThanOrEqual("_kafka_offset", first),
                    LessThanOrEqual("_kafka_offset", last),
                ),
            ),
        )
    return expression


def _retry(what: str, write: Callable[[], None], attempts: int = 8) -> None:
    # Several sinks share dq_results; pyiceberg's own retries still lose some races.
    def conflict(state: RetryCallState) -> None:
        log.warning("commit conflict writing %s, retrying (%d)", what, state.attempt_number)

    for attempt in Retrying(
        retry=retry_if_exception_type(CommitFailedException),
        stop=stop_after_attempt(attempts),
        wait=wait_incrementing(start=0.1, increment=0.1),  # 0.1 s times the attempt
        before_sleep=conflict,
        reraise=True,
    ):
        with attempt, warnings.catch_warnings():
            # Both are expected here: most replay overwrites match nothing, and
            # copy-on-write is what we want for these small tables.
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            warnings.filterwarnings("ignore", "Merge on read is not yet supported")
            write()


class QualityStore:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self.settings = settings
        self.catalog = catalog
        self.namespace = settings.catalog.namespace
        ensure_namespace(catalog, self.namespace)
        self._tables: dict[str, Table] = {}
        # Tables this process has written a batch to: later batches cannot be replays.
        self._written: set[str] = set()
        self._last_batch_key: dict[str, str] = {}

    def table(self, name: str) -> Table:
        if name not in self._tables:
            self._tables[name] = ensure_table(self.catalog, self.namespace, name)
        table = self._tables[name] = self._tables[name].refresh()
        return table

    def write(self, outcome: GateOutcome) -> None:
        source = outcome.table_name
        replay_possible = (
            source not in self._written or self._last_batch_key.get(source) == outcome.batch_key
        )
        self._write_quarantine(outcome, replay_possible)
        self._write_results(outcome, replay_possible)
        self._written.add(source)
        self._last_batch_key[source] = outcome.batch_key

    def _write_quarantine(self, outcome: GateOutcome, replay_possible: bool) -> None:
        name = QUARANTINE_TABLES.get(outcome.table_name)
        if name is None:
            if outcome.quarantined.num_rows:
                raise KeyError(
                    f"{outcome.table_name} has critical checks but no quarantine table; add a "
                    "quarantine model to schemas/quality.py and run `freshlabel schemas register`"
                )
            return
        if not outcome.quarantined.num_rows and not replay_possible:
            return

        def write() -> None:
            table = self.table(name)
            where = offset_filter(outcome.ranges)
            if outcome.quarantined.num_rows:
                rows = conform(outcome.quarantined, table)
                table.overwrite(rows, overwrite_filter=where)
            else:
                table.delete(where)

        _retry(name, write)

    def _write_results(self, outcome: GateOutcome, replay_possible: bool) -> None:
        if not outcome.results:
            return
        now = datetime.now(UTC)
        records: list[dict[str, Any]] = [
            {
                **r.model_dump(),
                "_kafka_partition": -1,
                "_kafka_offset": -1,
                "_batch_id": r.batch_id,
                "_ingested_at": now,
            }
            for r in outcome.results
        ]

        def write() -> None:
            table = self.table(RESULTS_TABLE)
            rows = pa.Table.from_pylist(records, schema=table.schema().as_arrow())
            if replay_possible:
                where = And(
                    EqualTo("table_name", outcome.table_name),
                    EqualTo("batch_key", outcome.batch_key),
                )
                table.overwrite(rows, overwrite_filter=where)
            else:
                table.append(rows)

        _retry(RESULTS_TABLE, write)

    def recent_results(
        self, since: datetime, table_name: str | None = None, fields: tuple[str, ...] = ("*",)
    ) -> pa.Table:
        """dq_results rows evaluated at or after `since` (for one table, or all)."""
        where: BooleanExpression = GreaterThanOrEqual("evaluated_at", since.isoformat())
        if table_name is not None:
            where = And(where, EqualTo("table_name", table_name))
        return self.table(RESULTS_TABLE).scan(row_filter=where, selected_fields=fields).to_arrow()


def conform(rows: pa.Table, table: Table) -> pa.Table:
    """`rows` with exactly the Iceberg table's columns, by name, in its order."""
    schema = table.schema().as_arrow()
    missing = [n for n in schema.names if n not in rows.column_names]
    if missing:
        raise KeyError(f"rows for {table.name()} lack column(s) {missing}")
    columns = [rows.column(n).cast(schema.field(n).type) for n in schema.names]
    return pa.Table.from_arrays(columns, schema=schema)
