"""The sink's ledger and commit loop without a broker: two writers on one table with forced
conflicts, a ledger that moves back (rollback), and counts that add up."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException

import streams.iceberg_sink as sink_module
from infra.catalog import open_catalog
from infra.config import Settings
from schemas import Impression
from streams.iceberg_sink import IcebergSink
from streams.offsets import append_with_offsets, committed_offsets, offsets_property
from tests.helpers import impression_fields

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def record(partition: int, offset: int, value: bytes) -> SimpleNamespace:
    return SimpleNamespace(partition=partition, offset=offset, value=value, key=None, timestamp=0)


def impression(partition: int, offset: int) -> bytes:
    at = T0 + timedelta(seconds=offset)
    return Impression(**impression_fields(f"i-{partition}-{offset}", at)).to_bytes()


class _NoDeadLetters:
    """The unit tests feed only good records; a dead letter here is a test bug."""

    def send(self, letter: object) -> None:
        raise AssertionError(f"unexpected dead letter {letter}")

    def flush(self) -> None:
        pass


def sink(settings: Settings) -> IcebergSink:
    s = IcebergSink(settings, "impressions", "impressions", batch_rows=10**9)
    s._dead_letters = _NoDeadLetters()  # type: ignore[assignment]
    return s


def feed(s: IcebergSink, partition: int, offsets: range, start: int | None = None) -> None:
    """Records as a consumer that sought to `start` (default: the first offset) reads them."""
    s.positions[partition] = offsets.start if start is None else start
    for offset in offsets:
        s._take_many([record(partition, offset, impression(partition, offset))])


def ids(settings: Settings) -> list[str]:
    table = open_catalog(settings).load_table("freshlabel.impressions")
    return table.scan(selected_fields=("impression_id",)).to_arrow().column(0).to_pylist()


def expected(partition: int, offsets: range) -> list[str]:
    return [f"i-{partition}-{o}" for o in offsets]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(state_dir=tmp_path / "state", quality={"enabled": False})


@pytest.fixture
def other_commits_first(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[IcebergSink]]:
    """The first append of the sink under test lets the queued sink commit just before it:
    a conflict at the worst moment, the ledger read already."""
    queued: list[IcebergSink] = []
    real = sink_module.append_with_offsets

    def racing(table, rows, topic, offsets):  # type: ignore[no-untyped-def]
        while queued:
            queued.pop().commit()
        return real(table, rows, topic, offsets)

    monkeypatch.setattr(sink_module, "append_with_offsets", racing)
    yield queued


def test_append_with_offsets_never_rebases(tmp_path: Path) -> None:
    catalog = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=f"file://{tmp_path}")
    catalog.create_namespace("n")
    catalog.create_table("n.t", schema=pa.schema([("x", pa.int64())]))
    a, b = catalog.load_table("n.t"), catalog.load_table("n.t")
    append_with_offsets(a, pa.table({"x": [1]}), "topic", {0: 1})
    with pytest.raises(CommitFailedException):
        append_with_offsets(b, pa.table({"x": [1]}), "topic", {0: 1})
    table = catalog.load_table("n.t")
    assert table.scan().to_arrow().num_rows == 1
    assert committed_offsets(table, "topic") == {0: 1}


def test_conflict_with_an_overlapping_writer_commits_each_row_once(
    settings: Settings, other_commits_first: list[IcebergSink]
) -> None:
    zombie, owner = sink(settings), sink(settings)
    feed(zombie, 0, range(0, 60))  # a rebalance left the old owner with part of the range
    feed(owner, 0, range(0, 100))
    feed(owner, 1, range(0, 40))
    other_commits_first.append(zombie)
    owner.commit()
    assert sorted(ids(settings)) == sorted(expected(0, range(100)) + expected(1, range(40)))
    assert owner.stats.commit_conflicts == 1
    assert owner.stats.skipped_already_committed == 60
    assert owner.stats.rows_committed == 80
    table = open_catalog(settings).load_table("freshlabel.impressions")
    assert committed_offsets(table, "impressions") == {0: 100, 1: 40}


def test_the_loser_of_a_race_for_the_same_batch_writes_nothing(
    settings: Settings, other_commits_first: list[IcebergSink]
) -> None:
    a, b = sink(settings), sink(settings)
    feed(a, 2, range(0, 500))
    feed(b, 2, range(0, 500))
    other_commits_first.append(b)
    a.commit()
    assert sorted(ids(settings)) == sorted(expected(2, range(500)))
    assert a.stats.rows_committed == 0 and a.stats.skipped_already_committed == 500


def test_a_batch_that_starts_past_the_ledger_is_not_committed(settings: Settings) -> None:
    early = sink(settings)
    feed(early, 0, range(50, 80))  # read from 50, but the ledger says 0..49 are not in yet
    early.commit()
    assert ids(settings) == []
    table = open_catalog(settings).load_table("freshlabel.impressions")
    assert committed_offsets(table, "impressions") == {}
    assert early.stats.records_consumed == 0


def test_rollback_brings_the_rolled_back_rows_back_exactly_once(settings: Settings) -> None:
    s = sink(settings)
    feed(s, 0, range(0, 100))
    s.commit()
    feed(s, 0, range(100, 200), start=100)
    s.commit()
    table = open_catalog(settings).load_table("freshlabel.impressions")
    first = table.metadata.snapshots[-2].snapshot_id
    table.manage_snapshots().rollback_to_snapshot(first).commit()
    table = table.refresh()
    assert committed_offsets(table, "impressions") == {0: 100}
    # The running sink reads on from 200: that batch is behind the ledger, so it is not
    # committed and the partition is re-read from 100.
    feed(s, 0, range(200, 250), start=200)
    s.commit()
    assert len(ids(settings)) == 100
    feed(s, 0, range(100, 250), start=100)
    s.commit()
    assert sorted(ids(settings)) == sorted(expected(0, range(250)))


def test_counts_add_up_to_the_records_consumed(settings: Settings) -> None:
    s = sink(settings)
    feed(s, 0, range(0, 100))
    s.commit()
    redelivered = sink(settings)
    feed(redelivered, 1, range(0, 30))
    for offset in range(30, 40):  # a producer retry resends rows already in the table
        redelivered._take_many([record(1, offset, impression(0, offset))])
    redelivered.commit()
    for stats in (s.stats, redelivered.stats):
        assert stats.records_consumed == (
            stats.rows_committed
            + stats.rows_quarantined
            + stats.dead_letters
            + stats.duplicates_dropped
            + stats.skipped_already_committed
        )
    assert redelivered.stats.duplicates_dropped == 10


def test_ledger_ignores_snapshots_off_the_main_ancestry(settings: Settings) -> None:
    s = sink(settings)
    feed(s, 0, range(0, 10))
    s.commit()
    table = open_catalog(settings).load_table("freshlabel.impressions")
    empty = pa.Table.from_pylist([], schema=table.schema().as_arrow())
    with table.transaction() as tx:
        tx.append(empty, snapshot_properties=offsets_property("impressions", {0: 999}))
    table = table.refresh()
    assert committed_offsets(table, "impressions") == {0: 999}
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.parent_snapshot_id is not None
    parent = snapshot.parent_snapshot_id
    table.manage_snapshots().rollback_to_snapshot(parent).commit()
    assert committed_offsets(table.refresh(), "impressions") == {0: 10}


class _Alerts:
    """Stands in for the alert publisher (Kafka, webhook): records what would go out."""

    def __init__(self) -> None:
        self.sent: list[object] = []

    def publish(self, alerts: list[object]) -> None:
        self.sent.extend(alerts)

    def close(self) -> None:
        pass


def gated_sink(settings: Settings, alerts: _Alerts) -> IcebergSink:
    from quality.gate import QualityGate

    s = IcebergSink(settings, "impressions.enriched", "impressions_enriched", batch_rows=10**9)
    s._dead_letters = _NoDeadLetters()  # type: ignore[assignment]
    s.gate = QualityGate(settings, open_catalog(settings), publisher=alerts)  # type: ignore[arg-type]
    return s


def enriched_records(n: int, produced_at: datetime, country: dict[int, str]) -> list[bytes]:
    from quality.samples import changed, enriched_impressions

    rows = enriched_impressions(n, produced_at, seed=5, prefix="e")
    return [
        changed(r, country=country[i]).to_bytes() if i in country else r.to_bytes()
        for i, r in enumerate(rows)
    ]


def test_gate_verdicts_follow_the_record_not_the_clock(tmp_path: Path) -> None:
    """Rows 100 days old by the wall clock but 70 days old when produced: the retention
    check (90 days) judges them by the record's Kafka timestamp, so a replay a month later
    reaches the verdict the first attempt reached."""
    settings = Settings(state_dir=tmp_path / "state")
    produced = datetime.now(UTC) - timedelta(days=30)
    values = enriched_records(30, produced - timedelta(days=70), {3: "XX"})
    s = gated_sink(settings, _Alerts())
    s.positions[0] = 0
    for offset, value in enumerate(values):
        rec = record(0, offset, value)
        rec.timestamp = int(produced.timestamp() * 1000)
        s._take_many([rec])
    s.commit()
    assert s.stats.rows_committed == 29 and s.stats.rows_quarantined == 1


def test_overlapping_writers_leave_a_quarantined_row_in_quarantine_only_once(
    tmp_path: Path, other_commits_first: list[IcebergSink]
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    now = datetime.now(UTC)
    values = enriched_records(40, now, {5: "XX", 33: "XX"})
    alerts = _Alerts()
    zombie, owner = gated_sink(settings, alerts), gated_sink(settings, alerts)
    for s, upto in ((zombie, 20), (owner, 40)):
        s.positions[1] = 0
        for offset in range(upto):
            s._take_many([record(1, offset, values[offset])])
    other_commits_first.append(zombie)
    owner.commit()
    catalog = open_catalog(settings)
    table = catalog.load_table("freshlabel.impressions_enriched")
    committed = table.scan(selected_fields=("impression_id",)).to_arrow().column(0).to_pylist()
    quarantine = catalog.load_table("freshlabel.impressions_enriched_quarantine")
    held = quarantine.scan(selected_fields=("impression_id",)).to_arrow().column(0).to_pylist()
    assert sorted(held) == ["e-5-33", "e-5-5"]
    assert len(committed) == 38 and not set(committed) & set(held)
    assert owner.stats.rows_quarantined == 1 and zombie.stats.rows_quarantined == 1
    assert owner.stats.commit_conflicts == 1
