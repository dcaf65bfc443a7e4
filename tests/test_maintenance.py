"""`tables maintain` on a real catalog: compaction, expiry and orphans keep data and ledger."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infra.catalog import ensure_namespace, ensure_table, open_catalog
from infra.config import Settings
from streams.arrow_rows import SourcePosition, to_arrow
from streams.maintenance import files_per_day, maintain
from streams.offsets import committed_offsets, offsets_property
from tests.conftest import freshlabel
from tests.test_sink_faults import impressions


def _fill(settings: Settings):  # type: ignore[no-untyped-def]
    catalog = open_catalog(settings)
    ensure_namespace(catalog, "freshlabel")
    table = ensure_table(catalog, "freshlabel", "impressions")
    rows = impressions(6_000, "m")  # 30 s apart: a bit over two days
    for n, start in enumerate(range(0, len(rows), 500)):
        chunk = rows[start : start + 500]
        arrow = to_arrow(
            table,
            chunk,
            [SourcePosition(0, start + i) for i in range(len(chunk))],
            f"b{n}",
            datetime.now(UTC),
        )
        table.append(arrow, snapshot_properties=offsets_property("impressions", {0: start + 500}))
        table = table.refresh()
    return catalog, table, rows


def test_maintain_compacts_expires_and_removes_orphans(settings: Settings) -> None:
    catalog, table, rows = _fill(settings)
    before = files_per_day(table)
    assert max(before.values()) >= 4
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    orphan = data_dir / "stray-from-a-crashed-writer.parquet"
    orphan.write_bytes(b"not referenced")
    old = time.time() - 7200
    os.utime(orphan, (old, old))

    now = datetime.now(UTC)
    report = maintain(
        table,
        closed_before=now.date(),
        expire_older_than=now + timedelta(seconds=1),
        orphan_older_than=now - timedelta(minutes=30),
        retain_last=1,
    )
    table = catalog.load_table("freshlabel.impressions")

    assert all(n == 1 for n in files_per_day(table).values()), files_per_day(table)
    assert report.files_before > report.files_after
    assert report.snapshots_expired > 0 and len(table.metadata.snapshots) <= 2
    assert not orphan.exists() and report.orphans_removed >= 1
    ids = table.scan(selected_fields=("impression_id",)).to_arrow().column(0).to_pylist()
    assert sorted(ids) == sorted(r.impression_id for r in rows)
    assert committed_offsets(table, "impressions") == {0: len(rows)}


def test_maintain_cli_runs_on_every_table(settings: Settings) -> None:
    _fill(settings)
    result = freshlabel(
        settings, "tables", "maintain", "--expire-after-hours", "0", "--orphan-after-hours", "0"
    )
    assert result.returncode == 0, result.stderr
    assert '"table":"freshlabel.impressions"' in result.stdout.replace(" ", "")
