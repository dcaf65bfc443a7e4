"""Table maintenance pyiceberg 0.12 lacks: compaction, snapshot expiry, orphan-file removal.

All three keep the sink's exactly-once ledger (Kafka offsets in snapshot summaries) intact:
a compaction commit carries the highest offsets of every topic, and expiry never removes the
snapshot of the main branch's ancestry that holds the highest offset of any (topic,
partition), nor any snapshot between it and the current one (the ledger is read along that
ancestry, streams/offsets.py).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from pyarrow import fs
from pydantic import BaseModel
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.table import Table

from streams.offsets import ledger, main_ancestry, offsets_property, snapshot_offsets

log = logging.getLogger(__name__)


class MaintenanceReport(BaseModel):
    table: str
    days_compacted: list[str] = []
    files_before: int = 0
    files_after: int = 0
    snapshots_expired: int = 0
    orphans_removed: int = 0


def _ledger_properties(table: Table) -> dict[str, str]:
    props: dict[str, str] = {}
    for topic, offsets in ledger(table).items():
        props.update(offsets_property(topic, offsets))
    return props


def _day_filter(table: Table, day: date) -> And:
    field = table.schema().find_field(table.spec().fields[0].source_id).name
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return And(
        GreaterThanOrEqual(field, start.isoformat()),
        LessThan(field, (start + timedelta(days=1)).isoformat()),
    )


def files_per_day(table: Table) -> dict[date, int]:
    counts: dict[date, int] = defaultdict(int)
    for task in table.scan().plan_files():
        # The only partition field is the day transform: days since the epoch.
        day = date(1970, 1, 1) + timedelta(days=task.file.partition[0])
        counts[day] += 1
    return dict(counts)


def compact_day(table: Table, day: date) -> tuple[int, int]:
    """Rewrite one day's data files as few large files. Returns (files before, after).

    The rewrite names the exact files it replaces (never a filter), so rows a sink appends to
    the same day meanwhile are kept even if the commit is retried on top of them.
    """
    scan = table.scan(row_filter=_day_filter(table, day))
    tasks = list(scan.plan_files())
    if len(tasks) < 2:
        return len(tasks), len(tasks)
    rows = scan.to_arrow()
    new_files = list(
        _dataframe_to_data_files(table.metadata, rows, table.io, write_uuid=uuid.uuid4())
    )
    with table.transaction() as tx:
        update = tx.update_snapshot(snapshot_properties=_ledger_properties(table))
        with update.overwrite() as rewrite:
            for task in tasks:
                rewrite.delete_data_file(task.file)
            for data_file in new_files:
                rewrite.append_data_file(data_file)
    return len(tasks), len(new_files)


def compact_closed_days(table: Table, closed_before: date, min_files: int = 4) -> MaintenanceReport:
    report = MaintenanceReport(table=".".join(table.name()))
    for day, count in sorted(files_per_day(table).items()):
        if day >= closed_before or count < min_files:
            continue
        before, after = compact_day(table, day)
        table = table.refresh()
        report.days_compacted.append(day.isoformat())
        report.files_before += before
        report.files_after += after
    return report


def expire_snapshots(table: Table, older_than: datetime, retain_last: int = 10) -> int:
    snapshots = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms)
    keep = {s.snapshot_id for s in snapshots[-retain_last:]}
    # The ledger is read along the current snapshot's ancestry: keep that chain down to the
    # oldest snapshot that still holds the highest offset of some (topic, partition).
    ancestry = list(main_ancestry(table))
    best: dict[tuple[str, int], tuple[int, int]] = {}
    for depth, s in enumerate(ancestry):
        for topic, partition, offset in snapshot_offsets(s):
            if (topic, partition) not in best or offset > best[(topic, partition)][0]:
                best[(topic, partition)] = (offset, depth)
    deepest = max((depth for _, depth in best.values()), default=-1)
    keep |= {s.snapshot_id for s in ancestry[: deepest + 1]}
    cutoff = older_than.timestamp() * 1000
    expired = [
        s.snapshot_id for s in snapshots if s.timestamp_ms < cutoff and s.snapshot_id not in keep
    ]
    if expired:
        table.maintenance.expire_snapshots().by_ids(expired).commit()
    return len(expired)


def _referenced(table: Table) -> set[str]:
    paths = set(table.inspect.all_files().column("file_path").to_pylist())
    paths |= set(table.inspect.all_manifests().column("path").to_pylist())
    paths |= {s.manifest_list for s in table.metadata.snapshots}
    paths |= {entry.metadata_file for entry in table.metadata.metadata_log}
    paths.add(table.metadata_location)
    return {_strip_scheme(p) for p in paths}


def _strip_scheme(path: str) -> str:
    return path.split("://", 1)[-1]


def remove_orphans(table: Table, older_than: datetime, dry_run: bool = False) -> list[str]:
    """Delete files under the table's location that no retained snapshot or metadata file
    references and that are older than `older_than` (younger ones may be in-flight writes)."""
    filesystem, root = fs.FileSystem.from_uri(table.location())
    referenced = _referenced(table)
    orphans = []
    for info in filesystem.get_file_info(fs.FileSelector(root, recursive=True)):
        if info.type != fs.FileType.File or _strip_scheme(info.path) in referenced:
            continue
        if info.mtime is not None and info.mtime.replace(tzinfo=UTC) >= older_than:
            continue
        orphans.append(info.path)
    if not dry_run:
        for path in orphans:
            filesystem.delete_file(path)
    return orphans


def maintain(
    table: Table,
    closed_before: date,
    expire_older_than: datetime,
    orphan_older_than: datetime,
    retain_last: int = 10,
) -> MaintenanceReport:
    report = compact_closed_days(table, closed_before)
    table = table.refresh()
    report.snapshots_expired = expire_snapshots(table, expire_older_than, retain_last)
    table = table.refresh()
    report.orphans_removed = len(remove_orphans(table, orphan_older_than))
    return report
