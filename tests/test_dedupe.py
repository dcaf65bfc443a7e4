"""The dedupe key index against a real pyiceberg table in an in-memory SQLite catalog.

No servers: rows are appended with pyiceberg the way the sink writes them
(streams/arrow_rows.py), by one or two writers, and the index is asked which events are new.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import EqualTo
from pyiceberg.table import Table

from infra.catalog import ensure_namespace, ensure_table
from schemas.base import Event
from schemas.impression import Impression
from schemas.relevance_label import RelevanceLabel
from streams.arrow_rows import SourcePosition, to_arrow
from streams.dedupe import KeyIndex, digests
from tests.helpers import impression_fields

T0 = datetime(2026, 10, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def catalog(tmp_path: Path) -> SqlCatalog:
    cat = SqlCatalog("t", uri="sqlite:///:memory:", warehouse=f"file://{tmp_path}")
    ensure_namespace(cat, "ns")
    return cat


def _table(catalog: SqlCatalog, name: str) -> Table:
    return ensure_table(catalog, "ns", name)


def imp(impression_id: str, when: datetime = T0) -> Impression:
    return Impression(**impression_fields(impression_id, when))


def label(
    impression_id: str,
    labeled_at: datetime,
    impression_time: datetime | None = T0,
    version: str = "v1",
) -> RelevanceLabel:
    return RelevanceLabel(
        impression_id=impression_id,
        query="q",
        pin_id="p",
        teacher_version=version,
        label_scale=4,
        probs=[0.25] * 4,
        score=1.5,
        labeled_at=labeled_at,
        input_hash="h",
        impression_time=impression_time,
    )


def commit(table: Table, events: Sequence[Event]) -> Table:
    """Append rows as the sink does; returns the table after the commit."""
    positions = [SourcePosition(0, i) for i in range(len(events))]
    table.append(to_arrow(table, events, positions, "b", datetime.now(UTC)))
    return table


def impressions_index(**kwargs: float) -> KeyIndex:
    index = KeyIndex.for_model(Impression, **kwargs)  # type: ignore[arg-type]
    assert index is not None
    return index


def test_duplicate_within_a_batch_is_kept_once(catalog: SqlCatalog) -> None:
    table = _table(catalog, "impressions")
    index = impressions_index()
    batch = [imp("a"), imp("b"), imp("a"), imp("a", T0 + timedelta(days=3)), imp("c")]
    assert index.new_indices(table, batch) == [0, 1, 4]
    # Asking does not remember: the same batch is new until it is committed.
    assert index.new_indices(table, batch) == [0, 1, 4]


def test_duplicate_of_a_committed_row_even_after_a_restart(catalog: SqlCatalog) -> None:
    table = _table(catalog, "impressions")
    index = impressions_index()
    first = [imp("a"), imp("b")]
    assert index.new_indices(table, first) == [0, 1]
    index.remember(first, commit(table, first))
    assert index.new_indices(table, [imp("b"), imp("c")]) == [1]
    restarted = impressions_index()
    assert restarted.new_indices(table.refresh(), [imp("a"), imp("d")]) == [1]


def test_impression_resent_days_later_is_a_duplicate_within_the_horizon(
    catalog: SqlCatalog,
) -> None:
    table = commit(_table(catalog, "impressions"), [imp("a"), imp("b")])
    index = impressions_index(horizon_days=7)
    resent = [imp("a", T0 + timedelta(days=3)), imp("b", T0 - timedelta(days=3))]
    assert index.new_indices(table, resent) == []
    # Beyond the horizon (whole UTC days) the same id is a new impression.
    assert index.new_indices(table, [imp("a", T0 + timedelta(days=8))]) == [0]


def test_relabel_days_later_is_a_duplicate_but_a_new_teacher_version_is_not(
    catalog: SqlCatalog,
) -> None:
    table = _table(catalog, "labels")
    index = KeyIndex.for_model(RelevanceLabel)
    assert index is not None and index.time_field == "impression_time"
    old = [label("i1", T0), label("i2", T0), label("i3", T0, impression_time=None)]
    index.remember(old, commit(table, old))
    later = T0 + timedelta(days=3)
    replay = [
        label("i1", later),  # relabel replay: same impression, labeled 3 days later
        label("i2", later, version="v2"),  # a new teacher labels it: a new row
        label("i3", T0 + timedelta(hours=1), impression_time=None),  # falls back to labeled_at
        label("i4", later),
    ]
    assert index.new_indices(table, replay) == [1, 3]
    # A fresh process reads the same answer from the table (impression_time pruning).
    fresh = KeyIndex.for_model(RelevanceLabel)
    assert fresh is not None and fresh.new_indices(table.refresh(), replay) == [1, 3]


def test_refresh_reads_only_the_other_writers_new_file(catalog: SqlCatalog) -> None:
    table = commit(_table(catalog, "impressions"), [imp("a")])
    table = commit(table, [imp("b")])
    index = impressions_index(horizon_days=1)
    assert index.new_indices(table, [imp("x")]) == [0]
    read_before = index.stats.files_read
    assert read_before == 2

    other = catalog.load_table("ns.impressions")  # a second sink process
    commit(other, [imp("x"), imp("y")])
    commit(other, [imp("far", T0 + timedelta(days=30))])  # touches no resident day
    index.refresh(table.refresh())
    assert index.stats.files_read == read_before + 1
    assert index.stats.snapshots_read == 2
    assert index.new_indices(table, [imp("x"), imp("y"), imp("z"), imp("a")]) == [2]
    assert index.stats.files_read == read_before + 1


def test_rollback_drops_the_rolled_back_keys(catalog: SqlCatalog) -> None:
    table = _table(catalog, "impressions")
    index = impressions_index()
    kept, rolled = [imp("a")], [imp("b")]
    index.new_indices(table, kept)
    index.remember(kept, commit(table, kept))
    good = table.current_snapshot()
    assert good is not None
    index.new_indices(table, rolled)
    index.remember(rolled, commit(table, rolled))
    assert index.new_indices(table, [imp("a"), imp("b")]) == []

    table.manage_snapshots().rollback_to_snapshot(good.snapshot_id).commit()
    assert index.new_indices(table.refresh(), [imp("a"), imp("b")]) == [1]
    assert index.stats.days_dropped >= 1


def test_rollback_past_what_the_index_tracked_starts_over(catalog: SqlCatalog) -> None:
    table = commit(_table(catalog, "impressions"), [imp("a")])
    first = table.current_snapshot()
    assert first is not None
    table = commit(table, [imp("b")])
    index = impressions_index()
    assert index.new_indices(table, [imp("a"), imp("b")]) == []
    table.manage_snapshots().set_current_snapshot(first.snapshot_id).commit()
    assert index.new_indices(table.refresh(), [imp("a"), imp("b")]) == [1]


def test_deleted_rows_are_accepted_again(catalog: SqlCatalog) -> None:
    table = commit(_table(catalog, "impressions"), [imp("a"), imp("b")])
    index = impressions_index()
    assert index.new_indices(table, [imp("a"), imp("b")]) == []
    catalog.load_table("ns.impressions").delete(EqualTo("impression_id", "b"))
    assert index.new_indices(table.refresh(), [imp("a"), imp("b")]) == [1]


def test_eviction_under_max_bytes_still_answers_by_rereading(catalog: SqlCatalog) -> None:
    days = [T0 + timedelta(days=d) for d in range(0, 40, 4)]
    table = commit(_table(catalog, "impressions"), [imp(f"k{i}", t) for i, t in enumerate(days)])
    index = impressions_index(horizon_days=1, max_bytes=2 * 16)
    probe = [imp(f"k{i}", t + timedelta(hours=30)) for i, t in enumerate(days)]
    assert index.new_indices(table, probe) == []
    assert index.nbytes <= 2 * 16
    assert index.stats.days_evicted > 0
    loaded = index.stats.days_loaded
    assert index.new_indices(table, probe + [imp("new", days[0])]) == [len(probe)]
    assert index.stats.days_loaded > loaded  # evicted days were read again, not forgotten


def test_for_model_without_a_key_is_none_and_digests_separate_fields() -> None:
    class Keyless(Event):
        topic: ClassVar[str] = "t"
        table: ClassVar[str] = "t"
        key_field: ClassVar[str] = "x"
        time_field: ClassVar[str] = "x"

    assert KeyIndex.for_model(Keyless) is None
    a, b, c = digests([["a:b", "a", "a"], ["c", "b:c", None]])
    assert len({a, b, c}) == 3
    assert (
        digests([(T0,)])[0]
        == digests([(int((T0 - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() * 1_000_000),)])[0]
    )


def test_own_commit_is_not_read_back_when_remember_gets_the_table(catalog: SqlCatalog) -> None:
    table = commit(_table(catalog, "impressions"), [imp("a")])
    index = impressions_index(horizon_days=0)
    index.new_indices(table, [imp("b")])
    read = index.stats.files_read
    index.remember([imp("b")], commit(table, [imp("b")]))
    assert index.new_indices(table, [imp("b"), imp("c")]) == [1]
    assert index.stats.files_read == read  # own commit: keys remembered, file not re-read
    index.remember([imp("c")])  # without the table: correct, at the cost of one read
    commit(table, [imp("c")])
    assert index.new_indices(table, [imp("c")]) == []
    assert index.stats.files_read == read + 1
