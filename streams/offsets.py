"""Kafka offsets stored in Iceberg snapshot summaries: the sink's exactly-once ledger.

Every snapshot the sink commits carries `freshlabel.offsets.<topic>` = JSON {partition:
next offset} for every partition it knows. Readers take, per partition, the highest value
over the retained snapshots: pyiceberg may rebase a commit onto a concurrent writer's
snapshot with our (older) view of the other partitions, so the latest snapshot alone could
lag; offsets only ever grow, so the maximum is the truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

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


def committed_offsets(table: Table, topic: str) -> dict[int, int]:
    """Next offset to read per partition, as recorded in the table's snapshots."""
    best: dict[int, int] = {}
    for snapshot in table.metadata.snapshots:
        for t, partition, offset in snapshot_offsets(snapshot):
            if t == topic:
                best[partition] = max(best.get(partition, 0), offset)
    return best


def offsets_property(topic: str, offsets: dict[int, int]) -> dict[str, str]:
    body = json.dumps({str(p): o for p, o in sorted(offsets.items())}, separators=(",", ":"))
    return {property_name(topic): body}
