"""Enrichment job speed: throughput over a prefilled backlog, latency at a steady rate.

    .venv/bin/python benchmarks/bench_enrich.py throughput [--impressions 200000 --pins 10000]
    .venv/bin/python benchmarks/bench_enrich.py latency [--rate 2000 --seconds 100]
    .venv/bin/python benchmarks/bench_enrich.py latency --seconds 40 --delay 1 --lateness 0

Each run starts its own stack (Tansu + the embedded Flink cluster) on free ports in a
temporary folder, deploys the job, and stops everything it started.

- throughput: every event (pins' content and captions, board saves, engagements, then the
  impressions, all in event-time order) is produced BEFORE the job starts; the job then
  works through the backlog. Rate = impressions / (last enriched_at - first enriched_at),
  so job start-up is excluded; the wall time from RUNNING to the last row is printed too.
  The output is then checked against the reference (pit_violations).
- latency: impressions stamped with the wall clock are produced at a steady rate (with
  engagements at a tenth of it); latency = enriched_at - event_time per row, i.e. up to the
  sink operator (the Kafka write adds the producer's 20 ms linger). The job emits a row only
  once the watermark passes it, so latency is bounded below by watermark_delay_s +
  allowed_lateness_s (the hold; defaults 5 + 60 s): --delay/--lateness measure other
  settings. The first --warmup seconds and the last hold + 2 s (flushed by the clock topic,
  not by the stream) are left out.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.cpu import machine_load, tree_cpu_seconds  # noqa: E402
from infra import stack  # noqa: E402
from infra.config import Settings  # noqa: E402
from infra.flink_cluster import JOBMANAGER, TASKMANAGER  # noqa: E402
from infra.kafka_io import consumer, producer, read_all  # noqa: E402
from infra.process import free_port  # noqa: E402
from schemas import BoardSave, Engagement, Event, Impression, PinCaption, PinContent  # noqa: E402
from streams.enrich import operations  # noqa: E402
from streams.enrich.clock import advance_event_time  # noqa: E402
from streams.enrich.reference import pit_violations  # noqa: E402

T0 = datetime(2026, 11, 2, tzinfo=UTC)
TITLES = [f"board title {i}" for i in range(50)]
QUERIES = [f"query {i}" for i in range(200)]


def bench_settings(state_dir: Path, **flink: Any) -> Settings:
    """Settings of a benchmark stack: free ports, the Flink cluster on, `flink` on top."""
    return Settings(
        state_dir=state_dir,
        broker={"port": free_port()},
        flink={
            "enabled": True,
            "rest_port": free_port(),
            "jobmanager_rpc_port": free_port(),
            **flink,
        },
    )


def backlog(impressions: int, pins: int, seed: int = 7) -> list[Event]:
    """Pins with content and a caption, then saves, engagements and impressions over two
    days, in event-time order."""
    rng = random.Random(seed)
    span_s = 48 * 3600
    events: list[Event] = []
    for p in range(pins):
        pin = f"p-{p:05d}"
        events.append(
            PinContent(
                pin_id=pin,
                title=f"pin {p} title",
                description=f"pin {p} description",
                updated_at=T0 + timedelta(seconds=rng.uniform(0, 3600)),
            )
        )
        events.append(
            PinCaption(
                pin_id=pin,
                caption=f"a photo of pin {p}",
                captioner_version="v1",
                created_at=T0 + timedelta(seconds=rng.uniform(3600, 7200)),
            )
        )
    for i in range(impressions // 10):
        events.append(
            BoardSave(
                pin_id=f"p-{rng.randrange(pins):05d}",
                board_id=f"b-{i}",
                board_title=rng.choice(TITLES),
                user_id=f"u-{rng.randrange(5000)}",
                event_time=T0 + timedelta(seconds=rng.uniform(0, span_s)),
            )
        )
    for i in range(impressions // 5):
        events.append(
            Engagement(
                impression_id=f"e-{i}",
                query=rng.choice(QUERIES),
                pin_id=f"p-{rng.randrange(pins):05d}",
                action="click",
                event_time=T0 + timedelta(seconds=rng.uniform(0, span_s)),
            )
        )
    for i in range(impressions):
        events.append(
            _impression(
                f"i-{i}",
                f"p-{rng.randrange(pins):05d}",
                rng,
                T0 + timedelta(seconds=rng.uniform(3600, span_s + 3600)),
            )
        )
    return sorted(events, key=lambda e: e.time)


def _impression(iid: str, pin: str, rng: random.Random, at: datetime) -> Impression:
    return Impression(
        impression_id=iid,
        request_id=f"r-{iid}",
        user_id=f"u-{rng.randrange(5000)}",
        query=rng.choice(QUERIES),
        pin_id=pin,
        position=rng.randrange(1, 50),
        country="US",
        locale="en-US",
        event_time=at,
    )


def produce(settings: Settings, events: list[Event]) -> float:
    started = time.monotonic()
    with producer(settings, linger_ms=100, batch_size=1 << 20) as prod:
        for event in events:
            prod.send(event.topic, key=event.key.encode(), value=event.to_bytes())
        prod.flush(timeout=300)
    return time.monotonic() - started


def wait_for_rows(settings: Settings, expected: int, timeout_s: float) -> list[Any]:
    """Every enriched row, once `expected` arrived. Counts with a consumer that only polls
    every 2 s, so it takes little CPU from the job while it runs."""
    reader = consumer(settings, None, max_poll_records=50_000, fetch_max_bytes=64 << 20)
    try:
        from kafka import TopicPartition

        topic = "impressions.enriched"
        tps = [TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic))]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        rows: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(rows) < expected and time.monotonic() < deadline:
            time.sleep(2.0)
            while polled := reader.poll(timeout_ms=500):
                for batch in polled.values():
                    rows.extend(batch)
        return rows
    finally:
        reader.close()


def service_pid(settings: Settings, service: str) -> int:
    """PID of one stack service, as `up` recorded it (infra/stack.py)."""
    state = stack.read_state(settings)
    assert state is not None
    return next(s.pid for s in state.services if s.name == service)


def cpu_seconds(settings: Settings, service: str) -> float:
    """User + system CPU time of one stack service (and its children) so far, from /proc: a
    measure of the job's cost that other load on the machine does not distort."""
    return tree_cpu_seconds(service_pid(settings, service))


def _parse_z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def throughput(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    settings = bench_settings(state_dir, parallelism=args.parallelism, **args.flink)
    events = backlog(args.impressions, args.pins)
    n_impressions = sum(isinstance(e, Impression) for e in events)
    stack.up(settings)
    try:
        produce_s = produce(settings, events)
        advance_event_time(settings, max(e.time for e in events))
        deploy_started = time.monotonic()
        operations.deploy(settings)
        deploy_s = time.monotonic() - deploy_started
        running_at = time.time()
        load_before = machine_load()
        cpu_at_start = cpu_seconds(settings, TASKMANAGER)
        jm_at_start = cpu_seconds(settings, JOBMANAGER)
        rows = wait_for_rows(settings, n_impressions, timeout_s=args.timeout)
        # Includes up to 2 s idle after the last row (the counting consumer's poll period).
        job_cpu_s = cpu_seconds(settings, TASKMANAGER) - cpu_at_start
        jm_cpu_s = cpu_seconds(settings, JOBMANAGER) - jm_at_start
        load_after = machine_load()
        enriched_at = sorted(_parse_z(json.loads(r.value)["enriched_at"]) for r in rows)
        span_s = (enriched_at[-1] - enriched_at[0]).total_seconds()
        violations = pit_violations(rows, events, settings.flink)
        return {
            "events_produced": len(events),
            "impressions": n_impressions,
            "rows_out": len(rows),
            "distinct_impressions_out": len({r.key for r in rows}),
            "produce_s": round(produce_s, 1),
            "deploy_s": round(deploy_s, 1),
            "first_row_after_running_s": round(enriched_at[0].timestamp() - running_at, 1),
            "running_to_last_row_s": round(enriched_at[-1].timestamp() - running_at, 1),
            "impressions_per_s": round(len(rows) / span_s) if span_s else None,
            "taskmanager_cpu_s": round(job_cpu_s, 1),
            "impressions_per_taskmanager_cpu_s": round(len(rows) / job_cpu_s),
            # Per impression, with its share of the pin-side events (events_produced).
            "taskmanager_cpu_us_per_impression": round(job_cpu_s * 1e6 / len(rows), 1),
            "jobmanager_cpu_s": round(jm_cpu_s, 1),
            "load_before": load_before,
            "load_after": load_after,
            "pit_violations": len(violations),
            "parallelism": args.parallelism,
        }
    finally:
        stack.down(settings)


def latency(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    settings = bench_settings(
        state_dir, watermark_delay_s=args.delay, allowed_lateness_s=args.lateness, **args.flink
    )
    rng = random.Random(11)
    pins = [f"p-{p:05d}" for p in range(args.pins)]
    stack.up(settings)
    try:
        now = datetime.now(UTC)
        prefill: list[Event] = [
            PinContent(pin_id=pin, title=f"{pin} title", updated_at=now - timedelta(hours=1))
            for pin in pins
        ]
        produce(settings, prefill)
        operations.deploy(settings)
        # The exactly-once sink runs alongside, so the lag to "visible in Iceberg" is measured.
        import threading

        from streams.iceberg_sink import IcebergSink

        sink_stop = threading.Event()
        sink = IcebergSink(
            settings,
            "impressions.enriched",
            "impressions_enriched",
            batch_seconds=args.sink_batch_seconds,
        )
        sink_thread = threading.Thread(target=sink.run, kwargs={"should_stop": sink_stop.is_set})
        sink_thread.start()
        total = int(args.rate * args.seconds)
        with producer(settings) as prod:
            started = time.monotonic()
            # The first seconds pay for JIT warm-up and for the prefilled partitions to go
            # idle (source_idle_timeout_s): not steady state.
            warm_until = datetime.now(UTC) + timedelta(seconds=args.warmup)
            for i in range(total):
                ahead = started + i / args.rate - time.monotonic()
                if ahead > 0.002:
                    time.sleep(ahead)
                at = datetime.now(UTC)
                imp = _impression(f"i-{i}", rng.choice(pins), rng, at)
                prod.send("impressions", key=imp.key.encode(), value=imp.to_bytes())
                if i % 10 == 0:
                    eng = Engagement(
                        impression_id=imp.impression_id,
                        query=imp.query,
                        pin_id=imp.pin_id,
                        action="click",
                        event_time=at,
                    )
                    prod.send("engagements", key=eng.key.encode(), value=eng.to_bytes())
            prod.flush()
            achieved = total / (time.monotonic() - started)
        sent_until = datetime.now(UTC)
        # The last `hold` seconds of impressions wait for newer events: move the clock, and
        # leave those rows (flushed by the clock, not by the stream) out of the latencies.
        advance_event_time(settings, sent_until)
        rows = [json.loads(r.value) for r in read_all(settings, "impressions.enriched", 5.0)]
        steady_until = sent_until - timedelta(seconds=args.delay + args.lateness + 2)
        lat = sorted(
            (_parse_z(v["enriched_at"]) - _parse_z(v["event_time"])).total_seconds()
            for v in rows
            if warm_until <= _parse_z(v["event_time"]) < steady_until
        )
        if len(lat) < 100:
            raise SystemExit(
                f"only {len(lat)} steady-state rows: run longer than warmup + hold + 2 s"
            )
        cuts = statistics.quantiles(lat, n=100)
        time.sleep(args.sink_batch_seconds + 5)
        sink_stop.set()
        sink_thread.join(timeout=120)
        visible = _visible_lags(settings, warm_until, steady_until)
        vcuts = statistics.quantiles(visible, n=100) if len(visible) >= 100 else None
        return {
            "iceberg_sink_batch_seconds": args.sink_batch_seconds,
            "iceberg_steady_rows": len(visible),
            "iceberg_visible_p50_s": round(vcuts[49], 3) if vcuts else None,
            "iceberg_visible_p95_s": round(vcuts[94], 3) if vcuts else None,
            "rate_target": args.rate,
            "rate_achieved": round(achieved),
            "impressions": total,
            "rows_out": len(rows),
            "watermark_delay_s": args.delay,
            "allowed_lateness_s": args.lateness,
            "warmup_s": args.warmup,
            "steady_rows": len(lat),
            "p50_s": round(cuts[49], 3),
            "p95_s": round(cuts[94], 3),
            "max_s": round(lat[-1], 3),
        }
    finally:
        stack.down(settings)


def _visible_lags(settings: Settings, since: datetime, until: datetime) -> list[float]:
    """Event time -> the commit of the Iceberg snapshot that made the row visible."""
    from infra.catalog import open_catalog
    from serving.labeler.freshness import visible_at

    table = open_catalog(settings).load_table(f"{settings.catalog.namespace}.impressions_enriched")
    rows = [
        r
        for r in table.scan(selected_fields=("event_time", "_ingested_at")).to_arrow().to_pylist()
        if since <= r["event_time"] < until
    ]
    visible = visible_at(table, [r["_ingested_at"].timestamp() for r in rows])
    return sorted(
        float(v) - r["event_time"].timestamp() for v, r in zip(visible, rows, strict=True)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=("throughput", "latency"))
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--pins", type=int, default=10_000)
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--rate", type=float, default=2000)
    parser.add_argument("--sink-batch-seconds", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=100)
    parser.add_argument("--delay", type=float, default=5.0, help="flink.watermark_delay_s")
    parser.add_argument("--lateness", type=float, default=60.0, help="flink.allowed_lateness_s")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--warmup", type=float, default=10.0, help="latency: seconds left out")
    parser.add_argument(
        "--flink", action="append", default=[], metavar="KEY=VALUE", help="a FlinkSettings field"
    )
    args = parser.parse_args()
    args.flink = dict(item.split("=", 1) for item in args.flink)
    state_dir = Path(tempfile.mkdtemp(prefix="bench-enrich-"))
    try:
        result = (throughput if args.mode == "throughput" else latency)(args, state_dir / "state")
    finally:
        shutil.rmtree(state_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
