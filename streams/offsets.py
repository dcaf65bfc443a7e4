"""Kafka offsets stored in Iceberg snapshot summaries: the sink's exactly-once ledger.

Every snapshot the sink commits carries `freshlabel.offsets.<topic>` = JSON {partition:
next offset} for every partition of the topic the table has seen, so one snapshot holds the
whole ledger as of its commit.

The truth is read along the main branch's ancestry, never over every snapshot the metadata
still lists: after `rollback_to_snapshot` the rolled-back snapshots are no longer ancestors,
so their offsets stop counting and their records are read again. Per partition the ledger is
the highest offset over the ancestors (a compaction or a foreign writer's snapshot carries no
offsets, and snapshots written by older versions of the sink, which pyiceberg may have
rebased with a stale view of other partitions, still count correctly).

Sink appends are committed exactly once or not at all (`append_with_offsets`): pyiceberg's
own retry would rebase the append onto a concurrent writer's snapshot without re-reading
this ledger, so it is switched off for these commits and conflicts come back to the sink,
which re-reads the ledger and drops what the other writer already committed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.snapshots import Snapshot, ancestors_of

PREFIX = "freshlabel.offsets."


def property_name(topic: str) -> str:
    return PREFIX + topic


def snapshot_offsets(snapshot: Snapshot) -> Iterator[tuple[str, int, int]]:
    """(topic, partition, next offset) recorded in one snapshot's summary."""
    props = snapshot.summary.additional_properties if snapshot.summary is not None else {}
    for key, raw in props.items():
        if key.startswith(PREFIX):
            for partition, offset in json.loads(raw).items():
                yield key.removeprefix(PREFIX), int(partition), int(offset)


def main_ancestry(table: Table) -> Iterator[Snapshot]:
    """The current snapshot of the main branch and its ancestors, newest first (stops where
    expiry removed a parent)."""
    return iter(ancestors_of(table.current_snapshot(), table.metadata))


def ledger(table: Table) -> dict[str, dict[int, int]]:
    """{topic: {partition: next offset}} along the main branch's ancestry."""
    best: dict[str, dict[int, int]] = {}
    for snapshot in main_ancestry(table):
        for topic, partition, offset in snapshot_offsets(snapshot):
            per_topic = best.setdefault(topic, {})
            per_topic[partition] = max(per_topic.get(partition, 0), offset)
    return best


def committed_offsets(table: Table, topic: str) -> dict[int, int]:
    """Next offset to read per partition of `topic`, as the table's current state records."""
    return ledger(table).get(topic, {})


def offsets_property(topic: str, offsets: dict[int, int]) -> dict[str, str]:
    body = json.dumps({str(p): o for p, o in sorted(offsets.items())}, separators=(",", ":"))
    return {property_name(topic): body}


def _without_commit_retries(table: Table) -> Table:
    """The same table, whose commits fail on the first conflict instead of being rebased."""
    properties = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    metadata = table.metadata.model_copy(update={"properties": properties})
    return Table(table.name(), metadata, table.metadata_location, table.io, table.catalog)


def append_with_offsets(table: Table, rows: pa.Table, topic: str, offsets: dict[int, int]) -> Table:
    """Append `rows` and record `offsets` as the topic's ledger, in one commit, exactly once.

    The commit requires the main branch to still be at the snapshot `table` was loaded at;
    it is never retried here.

    Args:
        table: The table as loaded when the ledger was read.
        rows: Rows shaped like the table (possibly none: the ledger alone moves).
        topic: The source topic.
        offsets: Next offset per partition: the whole ledger of the topic after this commit.

    Returns:
        The table after the commit.

    Raises:
        CommitFailedException: Another writer committed first; re-read the ledger and retry.
    """
    once = _without_commit_retries(table)
    with once.transaction() as tx:
        tx.append(rows, snapshot_properties=offsets_property(topic, offsets))
    return table.refresh()
