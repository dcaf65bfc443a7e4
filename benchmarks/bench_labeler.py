"""Continuous labeling: sustained labels/s with and without dedup, and freshness at a rate.

    .venv/bin/python benchmarks/bench_labeler.py --teacher DIR [--rate 500 --seconds 60]

Starts its own broker, catalog and Triton (serving the teacher in DIR) on free ports, then
1. throughput: pre-fills `impressions.enriched` and times the labeler draining it, once with
   realistic repetition (Zipf queries x pins: the dedup cache answers repeats) and once with
   every (query, pin) unique (every row goes to the teacher);
2. freshness: produces enriched rows stamped with the current time at `--rate` rows/s while
   the labeler and the labels sink run, then reports event time -> label visible in Iceberg.
The enrichment job is left out on purpose (its own latency is in bench_enrich.py).

The throughput runs also report CPU (user + system, from /proc): `labeler_cpu_us_per_row`
is this process's (the labeler runs in it: decode, text, cache, gRPC client, produce),
`triton_cpu_ms_per_scored_pair` is the Triton server's with its backend stubs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu import machine_load, tree_cpu_seconds  # noqa: E402
from infra import stack, triton  # noqa: E402
from infra.catalog import open_catalog  # noqa: E402
from infra.config import Settings  # noqa: E402
from infra.kafka_io import producer  # noqa: E402
from infra.process import free_port  # noqa: E402
from schemas import EnrichedImpression  # noqa: E402
from serving.labeler.freshness import freshness  # noqa: E402
from serving.labeler.labeler import Labeler  # noqa: E402
from serving.labeler.triton_scorer import TritonScorer  # noqa: E402
from serving.teacher.export import prepare_repository  # noqa: E402

WORDS = [
    "oak",
    "desk",
    "lamp",
    "wool",
    "blanket",
    "vase",
    "ceramic",
    "chair",
    "linen",
    "sofa",
    "rug",
    "garden",
    "tent",
    "boots",
]


def row(i: int, unique: bool, rng: np.random.Generator, at: datetime) -> EnrichedImpression:
    if unique:
        q, pin = f"{WORDS[i % 14]} {WORDS[(i // 14) % 14]} {i}", f"pin-u{i}"
    else:
        q = f"{WORDS[min(int(rng.zipf(1.6)), 14) - 1]} {WORDS[min(int(rng.zipf(1.6)), 14) - 1]}"
        pin = f"pin-{min(int(rng.zipf(1.3)), 400)}"
    return EnrichedImpression(
        impression_id=f"b{i}-{time.time_ns()}",
        request_id="r",
        user_id="u",
        query=q,
        pin_id=pin,
        position=1,
        country="US",
        locale="en-US",
        event_time=at,
        title=f"{pin} {WORDS[hash(pin) % 14]} {WORDS[hash(pin) // 7 % 14]}",
        caption=f"a photo of a {WORDS[hash(pin) % 14]}",
        enriched_at=at,
    )


async def drain(settings: Settings, expected: int) -> dict[str, object]:
    scorer = TritonScorer.from_settings(settings)
    labeler = Labeler(settings, scorer)
    state = stack.read_state(settings)
    triton_pid = next(r.pid for r in state.services if r.name == triton.SERVICE) if state else 0
    load_before = machine_load()
    triton_cpu = tree_cpu_seconds(triton_pid) if triton_pid else 0.0
    cpu = time.process_time()
    started = time.monotonic()
    try:
        stats = await labeler.run(max_rows=expected, idle_timeout_s=30)
    finally:
        await scorer.close()
    seconds = time.monotonic() - started
    # Includes up to idle_timeout_s of idle polling at the end (little CPU).
    cpu = time.process_time() - cpu
    triton_cpu = (tree_cpu_seconds(triton_pid) - triton_cpu) if triton_pid else 0.0
    return {
        "rows": stats.rows,
        "seconds": round(seconds, 1),
        "labels_per_s": round(stats.rows / seconds, 1),
        "hit_rate": round(stats.cache_hits / max(1, stats.rows), 3),
        "scored": stats.scored,
        "labeler_cpu_us_per_row": round(cpu * 1e6 / max(1, stats.rows), 1),
        "triton_cpu_ms_per_scored_pair": round(triton_cpu * 1e3 / max(1, stats.scored), 1),
        "load_before": load_before["load_avg_1_5_15"],
        "load_after": machine_load()["load_avg_1_5_15"],
    }


def throughput(settings: Settings, rows: int, unique: bool) -> dict[str, object]:
    rng = np.random.default_rng(3)
    now = datetime.now(UTC)
    with producer(settings) as prod:
        for i in range(rows):
            e = row(i, unique, rng, now)
            prod.send("impressions.enriched", key=e.key.encode(), value=e.to_bytes())
        prod.flush()
    return asyncio.run(drain(settings, rows))


def freshness_at_rate(settings: Settings, rate: float, seconds: float, env: dict[str, str]) -> dict:
    cmd = [sys.executable, "-m", "freshlabel.cli"]
    labeler = subprocess.Popen([*cmd, "label", "run"], env=env)
    # Both sinks run, as in production: freshness joins each label to its enriched row.
    sinks = [
        subprocess.Popen([*cmd, "sink", "run", "--topic", topic, "--batch-seconds", "5"], env=env)
        for topic in ("labels", "impressions.enriched")
    ]
    rng = np.random.default_rng(5)
    started = datetime.now(UTC)
    sent = 0
    t0 = time.monotonic()
    with producer(settings) as prod:
        while time.monotonic() - t0 < seconds:
            due = int((time.monotonic() - t0) * rate)
            while sent < due:
                e = row(10_000_000 + sent, False, rng, datetime.now(UTC))
                prod.send("impressions.enriched", key=e.key.encode(), value=e.to_bytes())
                sent += 1
            time.sleep(0.01)
        prod.flush()
    time.sleep(20)  # let the tail drain through labeler and sink
    for proc in (labeler, *sinks):
        proc.terminate()
        proc.wait(timeout=120)
    fresh = freshness(open_catalog(settings), settings.catalog.namespace, since=started)
    return {"rate": rate, "sent": sent, **fresh.model_dump()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher", required=True, type=Path)
    parser.add_argument("--rows", type=int, default=4000)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ports = {k: free_port() for k in ("http_port", "grpc_port", "metrics_port")}
        settings = Settings(
            state_dir=Path(tmp),
            broker={"port": free_port()},
            triton=ports,
            teacher={"model_dir": args.teacher},
            quality={"enabled": False},
        )
        env = {
            "FRESHLABEL_STATE_DIR": tmp,
            "FRESHLABEL_BROKER__PORT": str(settings.broker.port),
            "FRESHLABEL_QUALITY__ENABLED": "false",
            **{f"FRESHLABEL_TRITON__{k.upper()}": str(v) for k, v in ports.items()},
            "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        }
        prepare_repository(settings)
        stack.up(settings)
        try:
            result = {
                "dedup": throughput(settings, args.rows, unique=False),
                "no_dedup": throughput(settings, max(500, args.rows // 4), unique=True),
                "freshness": freshness_at_rate(settings, args.rate, args.seconds, env),
            }
        finally:
            stack.down(settings)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
