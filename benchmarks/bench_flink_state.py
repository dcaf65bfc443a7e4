"""Flink state of the enrichment job per pin: checkpoint size, RocksDB files and TaskManager memory.

    .venv/bin/python benchmarks/bench_flink_state.py [--pins 40000 --steps 2]
    .venv/bin/python benchmarks/bench_flink_state.py --backend hashmap

Starts its own stack (Tansu + the embedded Flink cluster) on free ports in a temporary
folder, deploys the job with default settings (RocksDB, incremental checkpoints, TTL), and
feeds it `--pins` new pins in `--steps` equal steps. Each pin gets a content version, a
caption, one late caption (behind the watermark, kept in the late table) and an impression,
so every per-pin table and join holds the pin. After each step the clock topic flushes the
impressions, the benchmark waits until every one is enriched, triggers a checkpoint and
reads: the checkpoint's full state size (Flink's `state_size`), its incremental size, the
RocksDB files on local disk, and the TaskManager's resident memory. The growth between the
first and the last step, divided by the pins added, is the cost per key; the 5-million-key
figure is that slope times the pins still to add plus the first step's total (a linear
extrapolation: per-pin state is independent of the other pins). Resident memory is not
extrapolated: with RocksDB it is bounded by the TaskManager's configured size. It stops
everything it started.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import TopicPartition  # noqa: E402

from benchmarks.bench_enrich import bench_settings  # noqa: E402
from infra import stack  # noqa: E402
from infra.config import Settings  # noqa: E402
from infra.flink_cluster import request  # noqa: E402
from infra.kafka_io import consumer, producer  # noqa: E402
from schemas import Event, Impression, PinCaption, PinContent  # noqa: E402
from streams.enrich import operations  # noqa: E402
from streams.enrich.clock import advance_event_time  # noqa: E402
from streams.produce import produce_events  # noqa: E402

KEYS_TARGET = 5_000_000


def pin_events(first: int, count: int, start: datetime) -> tuple[list[Event], list[Event]]:
    """(on-time events in event-time order, late captions) for pins first..first+count."""
    events: list[Event] = []
    late: list[Event] = []
    for n in range(first, first + count):
        pin = f"p-{n:08d}"
        at = start + timedelta(milliseconds=10 * (n - first))
        events.append(
            PinContent(pin_id=pin, title=f"pin {n}", description=f"pin {n} text", updated_at=at)
        )
        events.append(
            PinCaption(pin_id=pin, caption=f"a photo of {n}", captioner_version="v1", created_at=at)
        )
        events.append(
            Impression(
                impression_id=f"i-{n}",
                request_id=f"r-{n}",
                user_id="u-1",
                query="sweater",
                pin_id=pin,
                position=1,
                country="US",
                locale="en-US",
                event_time=at + timedelta(milliseconds=5),
            )
        )
        early = at - timedelta(hours=1)
        late.append(
            PinCaption(pin_id=pin, caption=f"late {n}", captioner_version="v0", created_at=early)
        )
    return events, late


def wait_for_records(settings: Settings, topic: str, count: int, timeout_s: float) -> None:
    """Until `topic` holds at least `count` records (counted by reading them: offsets of the
    embedded broker are not dense)."""
    reader = consumer(settings, None)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        seen = 0
        deadline = time.monotonic() + timeout_s
        while seen < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: {seen} of {count} records after {timeout_s:.0f}s")
            seen += sum(len(batch) for batch in reader.poll(timeout_ms=500).values())
    finally:
        reader.close()


def checkpoint(settings: Settings, job_id: str, timeout_s: float = 300) -> dict[str, Any]:
    """Trigger a checkpoint and return its statistics once completed."""
    trigger = request(settings, "POST", f"/jobs/{job_id}/checkpoints", {})
    wanted = trigger.get("request-id")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if wanted is not None:
            status = request(settings, "GET", f"/jobs/{job_id}/checkpoints/{wanted}")
            if status["status"]["id"] != "COMPLETED":
                time.sleep(1)
                continue
            checkpoint_id = (status.get("operation") or {}).get("checkpointId")
        else:
            checkpoint_id = None
        stats = request(settings, "GET", f"/jobs/{job_id}/checkpoints")
        latest = stats["latest"]["completed"]
        if latest and (checkpoint_id is None or latest["id"] >= checkpoint_id):
            return dict(latest)
        time.sleep(1)
    raise TimeoutError(f"checkpoint of {job_id} not done after {timeout_s:.0f}s")


def taskmanager_rss_mb(settings: Settings) -> float:
    state = stack.read_state(settings)
    assert state is not None
    (tm,) = [s for s in state.services if s.name == "flink-taskmanager"]
    total = 0
    pids = [tm.pid]
    while pids:
        pid = pids.pop()
        status = Path(f"/proc/{pid}/status")
        if status.exists():
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(c) for c in children.read_text().split()]
    return total / 1024


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pins", type=int, default=40_000)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--backend", choices=("rocksdb", "hashmap"), default="rocksdb")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-flink-state-"))
    settings = bench_settings(
        folder / "state", state_backend=args.backend, source_idle_timeout_s=2.0
    )
    start = (datetime.now(UTC) - timedelta(days=10)).replace(microsecond=0)
    stack.up(settings)
    points = []
    try:
        deployment = operations.deploy(settings)
        per_step = args.pins // args.steps
        produced = 0
        for step in range(args.steps):
            events, late = pin_events(step * per_step, per_step, start)
            with producer(settings) as prod:
                produce_events(prod, events)
            until = events[-1].time
            advance_event_time(settings, until)
            produced += per_step
            wait_for_records(settings, "impressions.enriched", produced, timeout_s=1800)
            with producer(settings) as prod:  # behind the watermark now: late versions
                produce_events(prod, late)
            wait_for_records(settings, "pin_captions.dlq", produced, timeout_s=1800)
            start = until + timedelta(minutes=5)
            stats = checkpoint(settings, deployment.job_id)
            point = {
                "pins": produced,
                "state_size_mb": stats["state_size"] / 2**20,
                "checkpointed_size_mb": stats.get("checkpointed_size", 0) / 2**20,
                "rocksdb_local_mb": dir_mb(settings.state_dir / "flink" / "tmp"),
                "taskmanager_rss_mb": taskmanager_rss_mb(settings),
            }
            points.append(point)
            print(json.dumps(point), flush=True)
        first, last = points[0], points[-1]
        added = last["pins"] - first["pins"]
        if added:
            for name in ("state_size_mb", "rocksdb_local_mb"):
                per_key = (last[name] - first[name]) / added
                at_target = first[name] + per_key * (KEYS_TARGET - first["pins"])
                print(
                    f"{name}: {per_key * 2**20:,.0f} bytes per pin; "
                    f"~{at_target / 1024:,.1f} GiB at {KEYS_TARGET:,} pins (linear extrapolation)"
                )
            print(
                f"taskmanager_rss_mb: {first['taskmanager_rss_mb']:,.0f} -> "
                f"{last['taskmanager_rss_mb']:,.0f}; with RocksDB it is capped by "
                f"flink.taskmanager_memory={settings.flink.taskmanager_memory} (heap and "
                "RocksDB's managed memory are fixed sizes), not by the number of pins"
            )
    finally:
        stack.down(settings)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
