"""CPU accounting for the benchmarks: CPU seconds of a process tree, and the machine's load.

CPU time (user + system, from /proc) measures what a component costs independently of how
many other processes shared the cores while it ran; wall-clock rates do not. The load
average is recorded next to every figure so a reader can tell a quiet run from a loaded one.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 is the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:  # the process is gone
        return None


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found.extend(int(c) for c in text)
    except OSError:
        pass
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and every live descendant, plus the children each of
    them has already waited for (a Triton server's Python backend stubs, a JVM started by
    `bash ... start-foreground`).

    Args:
        pid: The root process.

    Returns:
        CPU seconds so far; 0.0 if the process is gone.
    """
    total = 0
    todo, seen = [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        fields = _stat_fields(current)
        if fields is None:
            continue
        # utime, stime, cutime, cstime are fields 14-17 of stat, i.e. 11-14 after the name.
        total += sum(int(v) for v in fields[11:15])
        todo.extend(_children(current))
    return total / _TICK


def machine_load() -> dict[str, object]:
    """The 1/5/15-minute load average, the core count and the UTC time, for the record."""
    one, five, fifteen = os.getloadavg()
    return {
        "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_avg_1_5_15": [round(one, 2), round(five, 2), round(fifteen, 2)],
        "cpus": os.cpu_count(),
    }


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) jiffies of the whole machine so far (/proc/stat's first line).

    Steal is time the hypervisor ran someone else on this VM's cores: the difference of two
    readings over the difference of their totals is the share of a run lost that way.
    """
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user already).
    return fields[7], sum(fields[:8])


class CpuMeter:
    """CPU seconds a process tree spends between `start()` and `stop()`, with the machine's
    load at both ends."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.load_before: dict[str, object] = {}
        self.load_after: dict[str, object] = {}

    def start(self) -> CpuMeter:
        self.load_before = machine_load()
        self._cpu0 = tree_cpu_seconds(self.pid)
        self._t0 = time.monotonic()
        return self

    def stop(self) -> CpuMeter:
        self.cpu_s = tree_cpu_seconds(self.pid) - self._cpu0
        self.wall_s = time.monotonic() - self._t0
        self.load_after = machine_load()
        return self

    def per_unit_us(self, units: int) -> float | None:
        """CPU microseconds per unit of work (an impression, a row, a pair)."""
        return round(self.cpu_s * 1e6 / units, 1) if units else None

    def report(self, units: int, unit: str) -> dict[str, object]:
        """The measurement as JSON-ready fields."""
        return {
            "cpu_s": round(self.cpu_s, 2),
            "wall_s": round(self.wall_s, 2),
            f"cpu_us_per_{unit}": self.per_unit_us(units),
            # Cores this tree kept busy on average; on a loaded machine, less than it wanted.
            "cores_used": round(self.cpu_s / self.wall_s, 2) if self.wall_s else None,
            "load_before": self.load_before["load_avg_1_5_15"],
            "load_after": self.load_after["load_avg_1_5_15"],
        }
