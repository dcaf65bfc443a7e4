"""Kafka offsets stored in Iceberg snapshot summaries: the sink's exactly-once ledger.

Every snapshot the sink commits carries `freshlabel.offsets.<topic>` = JSON {partition:
next offset} for every partition it knows. Readers take, per partition, the highest value
over the retained snapshots: pyiceberg may rebase a commit onto a concurrent writer's
snapshot with our (older) view of the other partitions, so the latest snapshot alone could
lag; offsets only ever grow, so the maximum is the truth.
"""

from __future__ import annotations

import json

from pyiceberg.table import Table

PREFIX = "freshlabel.offsets."


def property_name(topic: str) -> str:
    return PREFIX + topic


def committed_offsets(table: Table, topic: str) -> dict[int, int]:
    """Next offset to read per partition, as recorded in the table's snapshots."""
    key = property_name(topic)
    best: dict[int, int] = {}
    for snapshot in table.metadata.snapshots:
        summary = snapshot.summary
        raw = summary.additional_properties.get(key) if summary is not None else None
        if raw is None:
            continue
        for partition, offset in json.loads(raw).items():
            best[int(partition)] = max(best.get(int(partition), 0), int(offset))
    return best


def offsets_property(topic: str, offsets: dict[int, int]) -> dict[str, str]:
    body = json.dumps({str(p): o for p, o in sorted(offsets.items())}, separators=(",", ":"))
    return {property_name(topic): body}
