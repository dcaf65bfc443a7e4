"""Commit contention: 1, 2, 4 and 8 sink processes writing ONE Iceberg table.

    .venv/bin/python benchmarks/bench_commit_contention.py [--writers 1,2,4,8] [--window 40]
        [--partitions 8] [--rows 160000] [--batch-rows 500] [--batch-seconds 1]
        [--assignment static|group]

Starts its own stack (free ports, temporary state folder, quality gate off), pre-fills
`impressions.enriched` (`--partitions` partitions) with realistic enriched rows, then for
each writer count N starts N real `freshlabel sink run` processes on a fresh table
(`contention_w<N>`), each reading its share of the partitions (static: p % N == i, or the
consumer group), with small batches so that commits are frequent. Once every process has
committed at least once, it counts over `--window` seconds: commits per minute (all writers
together), conflict retries (`commit_conflicts`: a commit another writer got in first,
retried on a fresh ledger), rows/s and the CPU the writers used, then stops them (SIGTERM,
final commit) and reads each one's final stats JSON. Prints one JSON object per N and a
summary; every process it started is stopped by its PID.

The snapshots of each table are counted too (commits in the window as the table saw them),
and the table is checked for exactly-once rows at the end (no impression twice).

First, in this process, it times the commit's conflict window (`commit_window`): from the
table refresh the ledger is read from to the catalog's compare-and-swap, i.e. what
`IcebergSink._commit_once` does minus the duplicate check (refresh, read the ledger, write the
Parquet file, manifests and metadata, swap), for `--batch-rows` rows and for `--probe-rows`.
Another writer's commit landing inside that window is a conflict.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_sink import (  # noqa: E402
    TOPIC,
    Sample,
    SinkProcess,
    bench_settings,
    enriched,
    prefill,
)
from benchmarks.cpu import machine_load  # noqa: E402
from infra import stack  # noqa: E402
from infra.catalog import ensure_namespace, ensure_table, open_catalog  # noqa: E402
from infra.config import Settings  # noqa: E402
from schemas import EnrichedImpression  # noqa: E402
from streams.arrow_rows import SourcePosition, to_arrow  # noqa: E402
from streams.offsets import append_with_offsets, committed_offsets  # noqa: E402


def commit_window(settings: Settings, rows: int, repeats: int) -> dict[str, Any]:
    """Seconds from the refresh a commit is based on to the catalog swap, median of
    `repeats` commits of `rows` rows each on a fresh table (one writer, no contention)."""
    catalog = open_catalog(settings)
    namespace = settings.catalog.namespace
    ensure_namespace(catalog, namespace)
    table = ensure_table(catalog, namespace, f"probe_{rows}", schema_of=EnrichedImpression.table)
    windows = []
    for r in range(repeats):
        events = [enriched(r * rows + i) for i in range(rows)]
        positions = [SourcePosition(0, r * rows + i) for i in range(rows)]
        started = time.monotonic()
        table = table.refresh()
        done = committed_offsets(table, TOPIC)
        arrow = to_arrow(table, events, positions, f"probe-{r}", datetime.now(UTC))
        table = append_with_offsets(table, arrow, TOPIC, {**done, 0: (r + 1) * rows})
        windows.append(time.monotonic() - started)
    return {
        "rows": rows,
        "window_s_median": round(statistics.median(windows), 3),
        "window_s_max": round(max(windows), 3),
        "repeats": repeats,
    }


def writer_args(n: int, i: int, args: argparse.Namespace) -> list[str]:
    common = ["--batch-rows", str(args.batch_rows), "--batch-seconds", str(args.batch_seconds)]
    if args.assignment == "static":
        return [*common, "--assignment", "static", "--workers", str(n), "--worker-index", str(i)]
    return [*common, "--assignment", "group", "--group", f"contention-w{n}"]


def _sum(samples: list[Sample | None]) -> Sample:
    live = [s for s in samples if s is not None]
    return Sample(
        at=time.monotonic(),
        cpu_s=sum(s.cpu_s for s in live),
        rows=sum(s.rows for s in live),
        commits=sum(s.commits for s in live),
        conflicts=sum(s.conflicts for s in live),
    )


def table_check(settings: Settings, table: str, since_ms: int, until_ms: int) -> dict[str, Any]:
    """Snapshots committed in [since, until) and duplicate impressions in the whole table."""
    loaded = open_catalog(settings).load_table(f"{settings.catalog.namespace}.{table}")
    stamps = [s.timestamp_ms for s in loaded.metadata.snapshots]
    ids = loaded.scan(selected_fields=("impression_id",)).to_arrow().column("impression_id")
    return {
        "table_snapshots_in_window": sum(since_ms <= t < until_ms for t in stamps),
        "table_snapshots_total": len(stamps),
        "table_rows": len(ids),
        "table_duplicate_rows": len(ids) - len(set(ids.to_pylist())),
    }


def run_writers(settings: Settings, n: int, args: argparse.Namespace, work: Path) -> dict:
    table = f"contention_w{n}"
    sinks = [
        SinkProcess(settings, table, writer_args(n, i, args), work / f"w{n}-{i}.log")
        for i in range(n)
    ]
    try:
        for sink in sinks:
            sink.start()
        # Window starts once every writer has committed (start-up and imports excluded).
        deadline = time.monotonic() + args.startup_timeout
        while time.monotonic() < deadline:
            now = [s.sample() for s in sinks]
            if any(s is None for s in now):
                break  # a writer ended early: reported below
            if all(s.commits > 0 for s in now if s is not None):
                break
            time.sleep(0.5)
        load_before = machine_load()
        begin = _sum([s.sample() for s in sinks])
        begin_ms = int(time.time() * 1000)
        end_at = begin.at + args.window
        while time.monotonic() < end_at:
            time.sleep(0.5)
            for sink in sinks:
                sink.sample()
        end = _sum([s.sample() for s in sinks])
        end_ms = int(time.time() * 1000)
        load_after = machine_load()
        finals = [sink.stop() for sink in sinks]
    finally:
        for sink in sinks:
            sink.kill()
    window = end.at - begin.at
    commits = end.commits - begin.commits
    conflicts = end.conflicts - begin.conflicts
    rows = end.rows - begin.rows
    failed = [
        f"writer {i}: exit {s.proc.returncode if s.proc else None}"
        for i, s in enumerate(sinks)
        if s.proc is None or s.proc.returncode != 0
    ]
    seen = table_check(settings, table, begin_ms, end_ms)
    return {
        "writers": n,
        "assignment": args.assignment,
        # As the table saw them: also counts writers that died during the window.
        "table_commits_per_min": round(seen["table_snapshots_in_window"] * 60 / window, 1),
        "window_s": round(window, 1),
        "commits": commits,
        "commits_per_min": round(commits * 60 / window, 1),
        "commits_per_min_per_writer": round(commits * 60 / window / n, 1),
        "conflict_retries": conflicts,
        "conflicts_per_commit": round(conflicts / commits, 3) if commits else None,
        "rows": rows,
        "rows_per_s": round(rows / window),
        "rows_per_commit": round(rows / commits) if commits else None,
        "writers_cpu_cores": round((end.cpu_s - begin.cpu_s) / window, 2),
        "cpu_ms_per_commit": round((end.cpu_s - begin.cpu_s) * 1000 / commits) if commits else None,
        "cpu_us_per_row": round((end.cpu_s - begin.cpu_s) * 1e6 / rows, 1) if rows else None,
        # Whole run, start to final commit, from each process's final stats JSON.
        "final_commits": sum(int(f.get("commits", 0)) for f in finals),
        "final_commit_conflicts": sum(int(f.get("commit_conflicts", 0)) for f in finals),
        "final_rows_committed": sum(int(f.get("rows_committed", 0)) for f in finals),
        "final_skipped_already_committed": sum(
            int(f.get("skipped_already_committed", 0)) for f in finals
        ),
        "failed_writers": failed,
        **seen,
        "load_before": load_before["load_avg_1_5_15"],
        "load_after": load_after["load_avg_1_5_15"],
        "at": load_before["at"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--writers", default="1,2,4,8")
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--rows", type=int, default=160_000, help="pre-filled rows")
    parser.add_argument("--batch-rows", type=int, default=500)
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--window", type=float, default=40.0, help="seconds counted per N")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--assignment", choices=("static", "group"), default="static")
    parser.add_argument("--probe-rows", type=int, default=50_000, help="commit_window rows")
    args = parser.parse_args()
    counts = [int(n) for n in args.writers.split(",")]
    if max(counts) > args.partitions:
        raise SystemExit(
            f"--writers {max(counts)} is above --partitions {args.partitions}: a writer "
            "would own no partition; raise --partitions"
        )
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        settings = bench_settings(work / "state", partitions=args.partitions, quality=False)
        stack.up(settings)
        try:
            produce_s = prefill(settings, args.rows)
            load = machine_load()
            windows = [
                commit_window(settings, args.batch_rows, 10),
                commit_window(settings, args.probe_rows, 3),
            ]
            print(json.dumps({"commit_window": windows, "load": load}), flush=True)
            for n in counts:
                result = run_writers(settings, n, args, work)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            stack.down(settings)
    summary = {
        "partitions": args.partitions,
        "prefilled_rows": args.rows,
        "produce_s": round(produce_s, 1),
        "batch_rows": args.batch_rows,
        "batch_seconds": args.batch_seconds,
        "quality_gate": False,
        "commit_window": windows,
        "table": [
            {
                k: r[k]
                for k in (
                    "writers",
                    "table_commits_per_min",
                    "commits_per_min",
                    "failed_writers",
                    "conflict_retries",
                    "conflicts_per_commit",
                    "rows_per_s",
                    "writers_cpu_cores",
                    "cpu_ms_per_commit",
                    "table_duplicate_rows",
                    "load_before",
                    "load_after",
                )
            }
            for r in results
        ],
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
