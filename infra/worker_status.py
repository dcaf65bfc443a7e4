"""Status files of the long-running workers (labeler, sinks) that `freshlabel status` shows.

Each worker rewrites `<state_dir>/status/<name>.json` after every batch (atomically), so
status needs no connection to it; the PID with its start time tells a running worker from
one that was killed, and `stopped_at` one that ended cleanly.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from infra.config import Settings
from infra.process import pid_alive, start_ticks


class WorkerStatus(BaseModel):
    name: str
    pid: int
    start_ticks: int
    started_at: float
    updated_at: float
    stopped_at: float | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.stopped_at is None and pid_alive(self.pid, self.start_ticks)

    @property
    def state(self) -> str:
        if self.stopped_at is not None:
            return "stopped"
        return "running" if self.running else "died"


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile of recent observations, for a status file (None when empty)."""
    array = np.fromiter(values, float)
    return round(float(np.percentile(array, q)), 3) if array.size else None


def status_dir(settings: Settings) -> Path:
    return settings.state_dir / "status"


class StatusFile:
    """This process's status file for worker `name`."""

    def __init__(self, settings: Settings, name: str) -> None:
        self.path = status_dir(settings) / f"{name.replace('/', '_')}.json"
        pid = os.getpid()
        self.status = WorkerStatus(
            name=name,
            pid=pid,
            start_ticks=start_ticks(pid) or 0,
            started_at=time.time(),
            updated_at=time.time(),
        )

    def write(self, metrics: dict[str, Any], stopped: bool = False) -> None:
        now = time.time()
        self.status = self.status.model_copy(
            update={"metrics": metrics, "updated_at": now, "stopped_at": now if stopped else None}
        )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(self.status.model_dump_json())
        tmp.replace(self.path)


def read_statuses(settings: Settings) -> list[WorkerStatus]:
    folder = status_dir(settings)
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(WorkerStatus.model_validate_json(path.read_text()))
        except ValueError:
            continue  # a file from an older version: nothing to show
    return found


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "n/a"


def describe(status: WorkerStatus) -> str:
    """One line for `freshlabel status`."""
    m = status.metrics
    age = f"updated {time.time() - status.updated_at:.0f} s ago"
    if status.name == "labeler":
        versions = ", ".join(f"{v}: {n:.0f}" for v, n in m.get("versions", {}).items())
        body = (
            f"{m.get('labels_total', 0):.0f} labels ({versions or 'none'}), "
            f"{m.get('labels_per_s', 0)}/s, backlog {m.get('backlog', 0):.0f}, "
            f"dedup hit rate {m.get('dedup_hit_rate', 0):.1%}, teacher call p50 "
            f"{_seconds(m.get('teacher_latency_p50_s'))} / p95 "
            f"{_seconds(m.get('teacher_latency_p95_s'))}, "
            f"{m.get('teacher_errors', 0):.0f} teacher errors, "
            f"{m.get('dead_letters', 0):.0f} to DLQ"
        )
    elif "rows_committed" in m:
        lag = ""
        if m.get("visible_lag_p50_s") is not None:
            lag = (
                f", {m.get('lag_field')} -> visible p50 {_seconds(m['visible_lag_p50_s'])}"
                f" / p95 {_seconds(m.get('visible_lag_p95_s'))}"
            )
        body = (
            f"{m['rows_committed']:.0f} rows in {m.get('commits', 0):.0f} commits, "
            f"{m.get('rows_quarantined', 0):.0f} quarantined, "
            f"{m.get('dead_letters', 0):.0f} to DLQ{lag}"
        )
    else:
        body = ", ".join(f"{k} {v}" for k, v in m.items())
    return f"{status.state} pid {status.pid}: {body}; {age}"
