"""Dedupe key index: memory and throughput at millions of keys, against a real table.

    .venv/bin/python benchmarks/bench_dedupe.py --keys 5000000

Writes `--keys` impressions with pyiceberg into an `impressions` table of a SQLite catalog
in a temporary folder (event times spread over `--days` days, 8 by default, so a batch on
the last day has every key within the 7-day horizon), then measures streams/dedupe.py `KeyIndex`:

- cold start: the first `new_indices` of a 100k batch loads every day within the horizon
  (time; memory by tracemalloc, peak and retained, and the process RSS growth, which
  includes what pyarrow's allocator keeps; the batch's events are built before);
- steady state: `new_indices` on further 100k batches (half new ids, half resent ids);
- `refresh` after another writer commits a 100k batch (files read, time).

The old per-day Python-set index (`DayKeyIndex` before issue #10, copied below) is measured
the same way on the keys it holds (the batch's day and the day before), and its per-key
cost is shown at the same number of keys. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import tracemalloc
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import numpy as np
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.catalog import ensure_namespace, ensure_table  # noqa: E402
from schemas.base import Event  # noqa: E402
from schemas.impression import Impression  # noqa: E402
from streams.arrow_rows import SourcePosition, to_arrow  # noqa: E402
from streams.dedupe import KeyIndex  # noqa: E402

T0 = datetime(2026, 10, 1, tzinfo=UTC)
Key = tuple[Hashable, ...]


class OldDayKeyIndex:
    """The index before issue #10 (streams/dedupe.py at 31be2c4), for comparison."""

    def __init__(self, key_fields: Sequence[str], time_field: str, max_days: int = 64) -> None:
        self.key_fields = tuple(key_fields)
        self.time_field = time_field
        self.max_days = max_days
        self._days: OrderedDict[date, set[Key]] = OrderedDict()

    def key_of(self, event: Event) -> Key:
        return tuple(getattr(event, f) for f in self.key_fields)

    def _keys_in_table(self, table: Table, day: date) -> set[Key]:
        start = datetime.combine(day, dtime(), tzinfo=UTC)
        lo, hi = start.isoformat(), (start + timedelta(days=1)).isoformat()
        rows = table.scan(
            row_filter=And(GreaterThanOrEqual(self.time_field, lo), LessThan(self.time_field, hi)),
            selected_fields=self.key_fields,
        ).to_arrow()
        columns = [rows.column(f).to_pylist() for f in self.key_fields]
        return set(zip(*columns, strict=True)) if columns else set()

    def _day(self, table: Table, day: date) -> set[Key]:
        if day not in self._days:
            self._days[day] = self._keys_in_table(table, day)
            while len(self._days) > self.max_days:
                self._days.popitem(last=False)
        self._days.move_to_end(day)
        return self._days[day]

    def new_indices(self, table: Table, events: Sequence[Event]) -> list[int]:
        keep: list[int] = []
        pending: set[Key] = set()
        for i, event in enumerate(events):
            key = self.key_of(event)
            day = getattr(event, self.time_field).date()
            if key in pending or key in self._day(table, day):
                continue
            if key in self._day(table, day - timedelta(days=1)):
                continue
            pending.add(key)
            keep.append(i)
        return keep

    def keys(self) -> int:
        return sum(len(s) for s in self._days.values())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def impression_rows(table: Table, first: int, count: int, days: int, total: int) -> pa.Table:
    """`count` impressions numbered from `first`, event times spread evenly over `days`."""
    ids = np.arange(first, first + count)
    seconds = (ids * (days * 86_400 / max(total, 1))).astype("int64")
    times = np.datetime64(T0.replace(tzinfo=None), "us") + seconds.astype("timedelta64[s]")
    schema = table.schema().as_arrow()
    columns = {
        "impression_id": pa.array([f"imp-{i:010d}" for i in ids.tolist()], pa.large_string()),
        "event_time": pa.array(times, pa.timestamp("us", tz="UTC")),
        "position": pa.array(np.ones(count, dtype="int64")),
        "_kafka_partition": pa.array(np.zeros(count, dtype="int32")),
        "_kafka_offset": pa.array(ids.astype("int64")),
    }
    data = {}
    for field in schema:
        if field.name in columns:
            data[field.name] = columns[field.name].cast(field.type)
        elif pa.types.is_timestamp(field.type):
            data[field.name] = pa.array(np.full(count, T0.replace(tzinfo=None)), field.type)
        else:
            data[field.name] = pa.array(["x"] * count, field.type)
    return pa.Table.from_pydict(data, schema=schema)


def batch(first_new: int, n: int, resend_from: int, at: datetime) -> list[Impression]:
    """Half new ids, half ids already in the table, all at `at` (the last day)."""
    half = n // 2
    ids = [f"imp-{i:010d}" for i in range(first_new, first_new + half)]
    ids += [f"imp-{i:010d}" for i in range(resend_from, resend_from + n - half)]
    return [
        Impression(
            impression_id=i, request_id="r", user_id="u", query="q", pin_id="p",
            position=1, country="US", locale="en-US", event_time=at,
        )
        for i in ids
    ]  # fmt: skip


def measure(load: Callable[[], object]) -> dict[str, float]:
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    load()
    seconds = time.perf_counter() - started
    retained, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds_traced": round(seconds, 2), "retained_mb": retained / 2**20,
            "peak_mb": peak / 2**20}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=5_000_000)
    parser.add_argument("--days", type=int, default=8)
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--skip-old", action="store_true")
    args = parser.parse_args()
    out: dict[str, object] = {"keys": args.keys, "days": args.days, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        catalog = SqlCatalog("b", uri=f"sqlite:///{tmp}/c.db", warehouse=f"file://{tmp}")
        ensure_namespace(catalog, "ns")
        table = ensure_table(catalog, "ns", "impressions")
        started = time.perf_counter()
        step = 1_000_000
        for first in range(0, args.keys, step):
            rows = impression_rows(table, first, min(step, args.keys - first), args.days, args.keys)
            table.append(rows)
            del rows
        out["write_s"] = round(time.perf_counter() - started, 1)
        out["data_files"] = len(list(table.scan().plan_files()))
        last = T0 + timedelta(days=args.days - 1, hours=12)
        nxt = args.keys

        probe = batch(nxt, args.batch, args.keys - args.batch, last)

        def run(index: KeyIndex) -> list[int]:
            return index.new_indices(table, probe)

        # Cold start, untraced: time and RSS (events built before).
        index = KeyIndex.for_model(Impression, horizon_days=7, max_bytes=1 << 30)
        assert index is not None
        gc.collect()
        rss0, t = rss_bytes(), time.perf_counter()
        kept = run(index)
        out["new_cold_s"] = round(time.perf_counter() - t, 2)
        out["new_rss_growth_mb"] = round((rss_bytes() - rss0) / 2**20, 1)
        assert len(kept) == args.batch // 2, len(kept)
        resident = index.resident_keys
        out["new_resident_keys"] = resident
        out["new_index_mb"] = round(index.nbytes / 2**20, 1)
        out["new_bytes_per_key"] = round(index.nbytes / max(resident, 1), 1)
        out["new_files_read_cold"] = index.stats.files_read
        # Steady state: batches on resident days (event construction not timed).
        times = []
        for b in range(args.batches):
            resend = args.keys - (b + 1) * args.batch
            events = batch(nxt + b * args.batch, args.batch, resend, last)
            t = time.perf_counter()
            kept = index.new_indices(table, events)
            times.append(time.perf_counter() - t)
            assert len(kept) == args.batch // 2
        per_batch = sorted(times)[len(times) // 2]
        out["new_steady_batch_s"] = round(per_batch, 3)
        out["new_steady_events_per_s"] = round(args.batch / per_batch)
        # Another writer commits a batch; refresh reads that file alone.
        other = catalog.load_table("ns.impressions")
        fresh = batch(nxt, args.batch, nxt, last)[: args.batch // 2]
        positions = [SourcePosition(0, i) for i in range(len(fresh))]
        other.append(to_arrow(other, fresh, positions, "b", datetime.now(UTC)))
        before = index.stats.files_read
        t = time.perf_counter()
        index.refresh(table.refresh())
        out["new_refresh_s"] = round(time.perf_counter() - t, 3)
        out["new_refresh_files_read"] = index.stats.files_read - before
        assert run(index) == []  # the other writer's keys are duplicates now
        del index
        # Memory traced (tracemalloc follows numpy's buffers): a second cold start.
        cold = KeyIndex.for_model(Impression, horizon_days=7, max_bytes=1 << 30)
        assert cold is not None
        out["new_traced"] = measure(lambda: run(cold))
        out["new_traced"]["index_mb"] = cold.nbytes / 2**20  # type: ignore[index]

        if not args.skip_old:
            old = OldDayKeyIndex(("impression_id",), "event_time")
            gc.collect()
            rss0, t = rss_bytes(), time.perf_counter()
            old.new_indices(table, probe)
            out["old_cold_s"] = round(time.perf_counter() - t, 2)
            out["old_rss_growth_mb"] = round((rss_bytes() - rss0) / 2**20, 1)
            out["old_resident_keys"] = old.keys()
            events = probe
            t = time.perf_counter()
            old.new_indices(table, events)
            out["old_steady_batch_s"] = round(time.perf_counter() - t, 3)
            del old
            traced_old = OldDayKeyIndex(("impression_id",), "event_time")
            out["old_traced"] = measure(lambda: traced_old.new_indices(table, events))
            keys = traced_old.keys()
            per_key = out["old_traced"]["retained_mb"] * 2**20 / keys  # type: ignore[index]
            out["old_bytes_per_key"] = round(per_key, 1)
            out["old_mb_at_keys"] = round(per_key * args.keys / 2**20)
    for key in ("new_traced", "old_traced"):
        traced = out.get(key)
        if isinstance(traced, dict):
            out[key] = {k: round(v, 1) for k, v in traced.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
