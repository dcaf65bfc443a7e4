"""How fast the world generator makes events: alone, with truth files, and into Kafka.

    .venv/bin/python benchmarks/bench_generator.py [--impressions 200000]

Starts its own embedded broker (memory storage) on free ports in a temporary state folder
and stops it by PID afterwards. Prints a Markdown table for docs/benchmarks.md.

Wall-clock rates depend on what else runs on the machine (the load average is printed), so
the CPU microseconds per event of each process are reported too: `capacity` is the rate the
slowest process could sustain with a core of its own (1e6 / its us per event).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from infra import stack
from infra.config import Settings
from infra.process import free_port
from streams.generator import generate_events, run
from streams.generator.writer import KafkaEventWriter


@dataclass
class Result:
    mode: str
    seconds: float
    events: int
    impressions: int
    # CPU microseconds per event: this process, the producer child, the broker.
    parent_us: float
    child_us: float | None = None
    broker_us: float | None = None

    @property
    def capacity(self) -> float:
        return 1e6 / max(self.parent_us, self.child_us or 0.0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pid_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(mode: str, once: Callable[[], tuple[int, int]], broker_pid: int | None) -> Result:
    broker0 = _pid_cpu(broker_pid) if broker_pid else 0.0
    children0, cpu0, wall0 = _children_cpu(), time.process_time(), time.perf_counter()
    events, impressions = once()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    # The producer child is waited for when it ends, so its CPU shows in RUSAGE_CHILDREN.
    children = _children_cpu() - children0
    broker = _pid_cpu(broker_pid) - broker0 if broker_pid else None
    per = 1e6 / events
    return Result(
        mode,
        wall,
        events,
        impressions,
        cpu * per,
        children * per if children > 0 else None,
        broker * per if broker is not None else None,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--impressions", type=int, default=200_000)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="bench-generator-") as tmp:
        settings = Settings(
            state_dir=Path(tmp) / "state",
            broker={"port": free_port()},
            generator={"impressions": args.impressions, "truth_dir": Path(tmp) / "truth"},
        )
        results: list[Result] = []

        def generate_only() -> tuple[int, int]:
            events = impressions = 0
            for event in generate_events(settings.generator):
                events += 1
                impressions += event.topic == "impressions"
            return events, impressions

        def with_truth() -> tuple[int, int]:
            report = run(settings, kafka=False, truth=True)
            return report.events, report.counts["impressions"]

        def one_process() -> tuple[int, int]:
            writer = KafkaEventWriter(settings)
            events = impressions = 0
            for event in generate_events(settings.generator):
                writer.observe(event)
                events += 1
                impressions += event.topic == "impressions"
            acked = writer.close()
            assert sum(acked.values()) == events
            return events, impressions

        def child_process() -> tuple[int, int]:
            report = run(settings, kafka=True, truth=False)
            assert report.acknowledged == {k: v for k, v in report.counts.items() if v}
            return report.events, report.counts["impressions"]

        results.append(measure("generate (iterate events)", generate_only, None))
        results.append(measure("generate + truth files", with_truth, None))
        state = stack.up(settings)
        try:
            broker_pid = next(s.pid for s in state.services if s.name == "broker")
            results.append(measure("generate + produce, one process", one_process, broker_pid))
            results.append(
                measure("generate + produce, producer child (default)", child_process, broker_pid)
            )
        finally:
            stack.down(settings)

    print(
        f"\n{args.impressions:,} impressions, seed {settings.generator.seed}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after\n"
    )
    print(
        "| mode | wall s | events | events/s | impressions/s "
        "| CPU us/event (generator / producer child / broker) | capacity events/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | --- | ---: |")
    for r in results:
        cpu = " / ".join(
            f"{v:.0f}" if v is not None else "-" for v in (r.parent_us, r.child_us, r.broker_us)
        )
        print(
            f"| {r.mode} | {r.seconds:.1f} | {r.events:,} | {r.events / r.seconds:,.0f} "
            f"| {r.impressions / r.seconds:,.0f} | {cpu} | {r.capacity:,.0f} |"
        )


if __name__ == "__main__":
    main()
