"""Overhead of the data-quality gate: checks per 100k rows, and sink throughput with and
without them.

    .venv/bin/python -m benchmarks.quality_overhead [--rows 200000] [--batch-rows 100000]

1. `QualityGate.check` on 100k-row Arrow batches of enriched impressions and of labels
   (the reference window already full, so every check runs), then `persist` (the
   dq_results write; nothing to quarantine) — median of 3 after a warm-up.
2. The real sink (embedded broker, SQLite catalog) draining the same `--rows` enriched
   impressions from Kafka into Iceberg, once with `quality.enabled=false` and once with
   the gate on (twice each, alternating); each run into its own fresh catalog. Wall
   time includes the consumer group join (~3 s here) in every run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from infra import stack
from infra.catalog import ensure_all_tables, open_catalog
from infra.config import Settings
from infra.kafka_io import producer
from infra.process import free_port
from quality.gate import QualityGate
from quality.samples import enriched_impressions, labels
from streams.arrow_rows import SourcePosition, to_arrow
from streams.iceberg_sink import IcebergSink
from streams.produce import produce_events


def _settings(state: Path, broker_port: int, quality: bool = True) -> Settings:
    return Settings(state_dir=state, broker={"port": broker_port}, quality={"enabled": quality})  # type: ignore[arg-type]


def gate_cost(root: Path, rows: int = 100_000) -> dict[str, float]:
    settings = _settings(root / "gate", free_port())
    catalog = open_catalog(settings)
    ensure_all_tables(settings, catalog)
    gate = QualityGate(settings, catalog)
    now = datetime.now(UTC)
    timings: dict[str, float] = {}
    for table, make in (
        ("impressions_enriched", enriched_impressions),
        ("labels", labels),
    ):
        target = catalog.load_table(f"freshlabel.{table}")
        batches = []
        for seed in range(7):
            events = make(rows, now, span_s=3600, seed=seed)
            positions = [SourcePosition(i % 4, seed * rows + i) for i in range(rows)]
            batches.append(to_arrow(target, events, positions, f"b{seed}", now))
        for warm in batches[:3]:  # GX import + a full reference window
            gate.persist(gate.check(table, warm, "warm"))
        checks, writes = [], []
        for batch in batches[3:6]:
            started = time.perf_counter()
            outcome = gate.check(table, batch, "timed")
            checked = time.perf_counter()
            gate.persist(outcome)
            writes.append(time.perf_counter() - checked)
            checks.append(checked - started)
            assert outcome.passed.num_rows == rows, [r.message for r in outcome.failed]
        timings[f"{table}: check s/100k rows"] = statistics.median(checks) * 100_000 / rows
        timings[f"{table}: persist s/batch"] = statistics.median(writes)
    return timings


def sink_throughput(root: Path, rows: int, batch_rows: int) -> dict[str, object]:
    base = _settings(root / "stack", free_port())
    stack.up(base)
    try:
        events = enriched_impressions(rows, datetime.now(UTC), span_s=600, seed=1)
        with producer(base) as prod:
            produce_events(prod, events)
        took: dict[str, list[float]] = {"without checks": [], "with checks": []}
        # Alternating (ABBA) so that neither mode always runs first on a shared machine.
        order = [("without checks", False), ("with checks", True)]
        for run, (label, enabled) in enumerate(order + order[::-1]):
            state = root / f"run-{run}"
            settings = _settings(state, base.broker.port, quality=enabled)
            ensure_all_tables(settings)
            sink = IcebergSink(
                settings,
                "impressions.enriched",
                "impressions_enriched",
                group_id=f"bench-{run}",
                batch_rows=batch_rows,
                batch_seconds=600,
            )
            started = time.perf_counter()
            stats = sink.run(max_rows=rows, idle_timeout_s=5)
            took[label].append(time.perf_counter() - started)
            assert stats.rows_committed == rows, stats
        results: dict[str, object] = {}
        for label, seconds in took.items():
            results[f"sink {label}: rows/s (median of 2)"] = rows / statistics.median(seconds)
            results[f"sink {label}: runs s"] = seconds
        return results
    finally:
        stack.down(base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--batch-rows", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dq-bench-") as tmp:
        root = Path(tmp)
        for name, value in {
            **gate_cost(root),
            **sink_throughput(root, args.rows, args.batch_rows),
        }.items():
            shown = (
                f"{value:>12.2f}"
                if isinstance(value, float)
                else "  " + ", ".join(f"{v:.1f}" for v in value)  # type: ignore[attr-defined]
            )
            print(f"{name:<48}{shown}")


if __name__ == "__main__":
    main()
