"""Iceberg sink throughput and CPU per row: enriched rows from a topic into the table, once.

    .venv/bin/python benchmarks/bench_sink.py --rows 200000 [--batch-rows 100000] [--no-quality]
        [--strict]

Starts its own stack (free ports, temporary state folder), pre-fills `impressions.enriched`
with realistic enriched rows, then runs one real `freshlabel sink run` process over them and
samples, every 0.05 s, its CPU time (user + system from /proc, children included) and the
rows its status file reports committed. Prints one JSON object:

- `rows_per_s`: rows committed between the first and the last commit seen, per wall second;
- `cpu_us_per_row`: CPU between those two commits per row they added (the marginal cost: the
  first batch, which also pays the quality gate's import and the table's creation, is left
  out); `cpu_us_per_row_all_in`: the process's whole CPU (imports included) per row.
`--decode-only` times just the decode step both ways in this process (no broker, no table).
`--strict` turns the bulk decode off (`sink.fast_decode=false`, every record through the
pydantic model): the before/after of the fast path on the same machine and load.
Both come with the load average before and after: on a shared machine the wall-clock rate
falls with load, the CPU per row much less.

`SinkProcess` is shared with `bench_commit_contention.py` (several sinks on one table).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.cpu import machine_load, tree_cpu_seconds  # noqa: E402
from infra import stack  # noqa: E402
from infra.config import Settings, SinkSettings  # noqa: E402
from infra.kafka_io import producer  # noqa: E402
from infra.process import free_port  # noqa: E402
from infra.worker_status import WorkerStatus, status_dir  # noqa: E402
from schemas import EnrichedImpression  # noqa: E402

T0 = datetime(2026, 10, 1, tzinfo=UTC)
TOPIC = "impressions.enriched"


def enriched(i: int) -> EnrichedImpression:
    at = T0 + timedelta(seconds=2 * i)
    return EnrichedImpression(
        impression_id=f"imp-{i}",
        request_id=f"req-{i // 8}",
        user_id=f"user-{i % 5000}",
        query=f"cozy winter sweater {i % 300}",
        pin_id=f"pin-{i % 10000}",
        position=i % 8 + 1,
        country="US",
        locale="en-US",
        event_time=at,
        title="Chunky knit cardigan in oatmeal wool",
        description="A warm, oversized cardigan "
        "knitted from merino wool, with wooden buttons and deep pockets." * 2,
        link_title="Knit cardigan | shop",
        content_updated_at=at - timedelta(days=3),
        caption="a woman wearing a chunky cream cardigan in a snowy forest",
        caption_updated_at=at - timedelta(days=2),
        board_titles=["winter outfits", "knitting ideas", "cozy"],
        boards_updated_at=at - timedelta(hours=5),
        top_queries=["cardigan", "winter sweater", "knit cardigan women"],
        top_queries_updated_at=at - timedelta(days=1),
        enriched_at=at,
    )


def bench_settings(
    state_dir: Path, partitions: int | None = None, quality: bool = True, fast: bool = True
) -> Settings:
    """Settings for a private stack: its own state folder, a free broker port."""
    settings = Settings(
        state_dir=state_dir,
        broker={"port": free_port()},
        quality={"enabled": quality},
        sink={"fast_decode": fast},
    )
    if partitions:
        settings.topics.partitions[TOPIC] = partitions
    return settings


def subprocess_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a `freshlabel` subprocess use `settings`' stack."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHLABEL_")}
    env.update(
        FRESHLABEL_STATE_DIR=str(settings.state_dir),
        FRESHLABEL_BROKER__PORT=str(settings.broker.port),
        FRESHLABEL_QUALITY__ENABLED=str(settings.quality.enabled).lower(),
        FRESHLABEL_SINK__FAST_DECODE=str(settings.sink.fast_decode).lower(),
    )
    return env


def prefill(settings: Settings, rows: int) -> float:
    """Produce `rows` enriched rows to the topic; returns the seconds it took."""
    started = time.monotonic()
    with producer(settings, linger_ms=50, batch_size=1 << 20) as prod:
        for event in map(enriched, range(rows)):
            prod.send(TOPIC, key=event.key.encode(), value=event.to_bytes())
        prod.flush(timeout=300)
    return time.monotonic() - started


@dataclass
class Sample:
    at: float  # monotonic
    cpu_s: float
    rows: int
    commits: int
    conflicts: int


@dataclass
class SinkProcess:
    """One `freshlabel sink run` subprocess, sampled for CPU and committed rows."""

    settings: Settings
    table: str
    args: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    samples: list[Sample] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)

    def start(self) -> SinkProcess:
        argv = [sys.executable, "-m", "freshlabel.cli", "sink", "run", "--topic", TOPIC]
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [*argv, "--table", self.table, *self.args],
                env=subprocess_env(self.settings),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=err,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _status(self) -> dict[str, Any]:
        for path in status_dir(self.settings).glob(f"sink-{self.table}@{self.pid}-*.json"):
            try:
                return WorkerStatus.model_validate_json(path.read_text()).metrics
            except (OSError, ValueError):  # being rewritten: take the next sample
                return {}
        return {}

    def sample(self) -> Sample | None:
        """CPU and counts now (None once the process ended); kept when a commit happened
        since the last sample kept."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        cpu = tree_cpu_seconds(self.pid)
        metrics = self._status()
        now = Sample(
            time.monotonic(),
            cpu,
            int(metrics.get("rows_committed", 0) or 0),
            int(metrics.get("commits", 0) or 0),
            int(metrics.get("commit_conflicts", 0) or 0),
        )
        if not self.samples or now.commits != self.samples[-1].commits:
            self.samples.append(now)
        return now

    def stop(self, timeout_s: float = 120) -> dict[str, Any]:
        """SIGTERM (a final commit, then exit), wait, and return its final stats JSON."""
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        self.final = json.loads(lines[-1]) if lines else {}
        return self.final

    def kill(self) -> None:
        """Make sure the process is gone (by its PID; used on the way out)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def steady(self) -> dict[str, Any]:
        """Rate and CPU per row between the first and the last commit seen."""
        seen = [s for s in self.samples if s.commits > 0]
        if len(seen) < 2:
            return {"steady_commits": len(seen)}
        first, last = seen[0], seen[-1]
        rows = last.rows - first.rows
        wall = last.at - first.at
        return {
            "steady_commits": last.commits - first.commits,
            "steady_rows": rows,
            "steady_wall_s": round(wall, 2),
            "rows_per_s": round(rows / wall) if wall else None,
            "cpu_us_per_row": round((last.cpu_s - first.cpu_s) * 1e6 / rows, 1) if rows else None,
            "cores_used": round((last.cpu_s - first.cpu_s) / wall, 2) if wall else None,
        }


def decode_only(rows: int, chunk: int = 5000, repeats: int = 3) -> dict[str, Any]:
    """CPU per row of the decode step alone, both ways, on the same realistic records: the
    strict path (pydantic per record, then the Arrow columns from the events) and the bulk
    fast path (`Decoder.decode_rows`, `chunk` records a call as a poll hands them over).
    Best of `repeats`; no broker, no table."""
    from schemas.iceberg import iceberg_schema, table_entry
    from streams.arrow_rows import model_columns
    from streams.decode import Decoder

    schema = iceberg_schema(table_entry(EnrichedImpression.table)).as_arrow()
    values = [enriched(i).to_bytes() for i in range(rows)]
    now = max(enriched(i).event_time for i in (0, rows - 1)) + timedelta(seconds=1)

    def decoder(fast: bool) -> Decoder[EnrichedImpression]:
        d: Decoder[EnrichedImpression] = Decoder(
            TOPIC, Settings().decode, "bench", clock=lambda: now
        )
        d.use_columns(schema, fast)
        return d

    def strict() -> int:
        d = decoder(False)
        events = [d.decode_bytes(v, 0, i) for i, v in enumerate(values)]
        return model_columns(schema, events).num_rows  # type: ignore[arg-type]

    def fast() -> int:
        d = decoder(True)
        n = 0
        for start in range(0, rows, chunk):
            part = values[start : start + chunk]
            offsets = list(range(start, start + len(part)))
            n += d.decode_rows(part, [0] * len(part), offsets, [None] * len(part)).rows.num_rows
        return n

    result: dict[str, Any] = {"rows": rows, "chunk": chunk, "load_before": machine_load()}
    for name, run in (("strict", strict), ("fast", fast)):
        best = float("inf")
        for _ in range(repeats):
            started = time.process_time()
            assert run() == rows
            best = min(best, time.process_time() - started)
        result[f"{name}_cpu_us_per_row"] = round(best * 1e6 / rows, 2)
    result["load_after"] = machine_load()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    # The sink's own default (sink.batch_rows): what a production sink commits at.
    parser.add_argument("--batch-rows", type=int, default=SinkSettings().batch_rows)
    parser.add_argument("--no-quality", action="store_true", help="quality gate off")
    parser.add_argument(
        "--strict", action="store_true", help="every record through pydantic (sink.fast_decode off)"
    )
    parser.add_argument(
        "--decode-only",
        action="store_true",
        help="only the decode step, strict vs fast, in this process (no broker, no table)",
    )
    args = parser.parse_args()
    if args.decode_only:
        print(json.dumps(decode_only(args.rows), indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(
            Path(tmp) / "state", quality=not args.no_quality, fast=not args.strict
        )
        stack.up(settings)
        sink: SinkProcess | None = None
        try:
            produce_s = prefill(settings, args.rows)
            load_before = machine_load()
            children_before = os.times()
            sink = SinkProcess(
                settings,
                "impressions_enriched",
                ["--batch-rows", str(args.batch_rows), "--batch-seconds", "600"]
                + ["--max-rows", str(args.rows), "--idle-timeout", "20"],
                Path(tmp) / "sink.log",
            ).start()
            started = time.monotonic()
            while sink.proc is not None and sink.proc.poll() is None:
                sink.sample()
                time.sleep(0.05)
            final = sink.stop()
            wall = time.monotonic() - started
            children = os.times()
            all_in = (children.children_user - children_before.children_user) + (
                children.children_system - children_before.children_system
            )
            # A last commit right before the exit may fall between two samples: count it
            # at the exit, with the process's whole CPU (a slightly pessimistic figure).
            seen = sink.samples[-1] if sink.samples else None
            if seen is not None and int(final.get("commits") or 0) > seen.commits:
                sink.samples.append(
                    Sample(
                        time.monotonic(),
                        all_in,
                        int(final.get("rows_committed") or 0),
                        int(final.get("commits") or 0),
                        int(final.get("commit_conflicts") or 0),
                    )
                )
            rows = int(final.get("rows_committed", 0))
            result = {
                "rows": rows,
                "commits": final.get("commits"),
                "batch_rows": args.batch_rows,
                "quality_gate": not args.no_quality,
                "fast_decode": not args.strict,
                "produce_s": round(produce_s, 1),
                "process_wall_s": round(wall, 1),
                **sink.steady(),
                "process_cpu_s": round(all_in, 1),
                "cpu_us_per_row_all_in": round(all_in * 1e6 / rows, 1) if rows else None,
                "load_before": load_before,
                "load_after": machine_load(),
            }
        finally:
            if sink is not None:
                sink.kill()
            stack.down(settings)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
