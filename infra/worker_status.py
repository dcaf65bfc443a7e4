"""Status files of the long-running workers (labeler, sinks) that `freshlabel status` shows.

The guarantee: a worker that did not end cleanly is never shown as ok, and stays listed as
dead until a newer process of the same name has run healthily since.

Each worker *process* owns one file, `<state_dir>/status/<name>@<pid>-<ticks>-<n>.json`,
rewritten atomically after every batch, so two sinks on one table never overwrite each
other and `status` needs no connection to them. The file records the PID with its
`/proc/<pid>/stat` start time (PIDs are reused) and the host. Its end is one of:

- `stopped`: the worker wrote `stopped=True` on a clean exit;
- `failed`: the worker wrote `error="<one line>"` when it died on an exception (an
  error is sticky: a clean-stop write after it keeps the failure), or the interpreter
  exited without either (an exit hook writes the failure);
- `killed`: the file still says running but the PID is gone or belongs to another process
  (SIGKILL, OOM, power loss). A heartbeat thread touches the file every few seconds, so
  its modification time says when the worker was last seen alive.

`status` groups the files by worker name (one group per sink table, one for the labeler).
A dead record stays visible until a process of the same name that started after the death
is healthy (stopped cleanly, reported a batch, or has run for `SETTLE_S`); a name with
`CRASH_LOOP_DEATHS` deaths inside `CRASH_LOOP_WINDOW_S` and no healthy process since the
last one is shown as crash-looping with its last error. Each new worker prunes the files
of its name that no longer matter, so the folder stays small under a crash loop.
"""

from __future__ import annotations

import atexit
import itertools
import os
import re
import socket
import threading
import time
import weakref
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, Field, PrivateAttr

from infra.config import Settings
from infra.process import pid_alive, start_ticks

# A name with this many deaths inside the window, and no healthy process since, is
# crash-looping.
CRASH_LOOP_DEATHS = 3
CRASH_LOOP_WINDOW_S = 600.0
# A running process counts as healthy (and hides older deaths) once it reported a batch or
# has been up this long.
SETTLE_S = 30.0
# The status file's mtime is refreshed this often while the process lives.
HEARTBEAT_S = 5.0
# At most this many dead records are kept per name.
KEEP_DEAD = 20
ERROR_CHARS = 500

State = Literal["running", "stopped", "failed", "killed"]
# What `status --json` shows of a record beside its fields (WorkerStatus properties).
DERIVED = ("state", "dead", "ended_at", "seen_at")
DEAD_STATES = ("failed", "killed")
HOST = socket.gethostname()


def one_line(error: str) -> str:
    """The first non-empty line of an error message, shortened for a status line."""
    line = next((s.strip() for s in str(error).splitlines() if s.strip()), "unknown error")
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 3] + "..."


class WorkerStatus(BaseModel):
    name: str
    pid: int
    start_ticks: int
    host: str = ""
    started_at: float
    updated_at: float
    # When the worker ended: cleanly, or on the error below.
    stopped_at: float | None = None
    error: str | None = None
    # Status writes so far: more than one means it reported progress after starting.
    writes: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    # When the file was last touched (heartbeat); set by the reader.
    _seen_at: float | None = PrivateAttr(default=None)

    @property
    def seen_at(self) -> float:
        """The last time the worker was known to be alive."""
        return max(self.updated_at, self._seen_at or 0.0)

    @property
    def running(self) -> bool:
        if self.stopped_at is not None:
            return False
        if self.host in ("", HOST):
            return pid_alive(self.pid, self.start_ticks)
        # Another host's PIDs mean nothing here: trust the heartbeat instead.
        return time.time() - self.seen_at < 3 * HEARTBEAT_S

    @property
    def state(self) -> State:
        if self.error is not None:
            return "failed"
        if self.stopped_at is not None:
            return "stopped"
        return "running" if self.running else "killed"

    @property
    def dead(self) -> bool:
        return self.state in DEAD_STATES

    @property
    def ended_at(self) -> float | None:
        """When it stopped or died (for a killed worker: when it was last seen alive)."""
        state = self.state
        if state == "running":
            return None
        return self.stopped_at if self.stopped_at is not None else self.seen_at

    def healthy(self, now: float) -> bool:
        """Stopped cleanly, or running and past its start (a batch reported, or settled)."""
        state = self.state
        if state == "stopped":
            return True
        return state == "running" and (self.writes >= 2 or now - self.started_at >= SETTLE_S)

    def report(self) -> dict[str, Any]:
        """The record as `status --json` shows it: its fields, then what they say
        (`DERIVED`)."""
        return {**self.model_dump(), **{name: getattr(self, name) for name in DERIVED}}


class WorkerGroup(BaseModel):
    """Every visible process of one worker name (one sink table, or the labeler)."""

    name: str
    # running | stopped | dead | crash_looping
    state: str
    running: int = 0
    stopped: int = 0
    failed: int = 0
    killed: int = 0
    deaths_in_window: int = 0
    last_error: str | None = None
    last_death_at: float | None = None
    # Counters summed over the visible processes.
    totals: dict[str, float] = Field(default_factory=dict)
    pids: list[int] = Field(default_factory=list)

    @property
    def dead(self) -> bool:
        return self.state in ("dead", "crash_looping")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile of recent observations, for a status file (None when empty)."""
    array = np.fromiter(values, float)
    return round(float(np.percentile(array, q)), 3) if array.size else None


def status_dir(settings: Settings) -> Path:
    return settings.state_dir / "status"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


_SEQUENCE = itertools.count()
_LIVE: weakref.WeakSet[StatusFile] = weakref.WeakSet()
_HEARTBEAT_LOCK = threading.Lock()
_heartbeat: threading.Thread | None = None


class StatusFile:
    """This process's status file for worker `name` (one file per process and worker)."""

    def __init__(self, settings: Settings, name: str) -> None:
        pid = os.getpid()
        ticks = start_ticks(pid) or 0
        self.folder = status_dir(settings)
        self.path = self.folder / f"{_safe(name)}@{pid}-{ticks}-{next(_SEQUENCE)}.json"
        now = time.time()
        self.status = WorkerStatus(
            name=name, pid=pid, start_ticks=ticks, host=HOST, started_at=now, updated_at=now
        )
        self._lock = threading.Lock()
        self._written = False
        prune(self.folder, name)
        _LIVE.add(self)
        _start_heartbeat()

    @property
    def ended(self) -> bool:
        return self.status.stopped_at is not None

    def write(
        self, metrics: dict[str, Any], stopped: bool = False, error: str | None = None
    ) -> None:
        """Record `metrics`; `stopped=True` on a clean exit, `error` when dying on one.

        Args:
            metrics: the worker's counters and percentiles now.
            stopped: the worker ends cleanly.
            error: the worker dies on this error (first line kept); wins over `stopped`,
                also when written before it.
        """
        with self._lock:
            now = time.time()
            update: dict[str, Any] = {
                "metrics": metrics,
                "updated_at": now,
                "writes": self.status.writes + 1,
            }
            if error is not None:
                update.update(error=one_line(error), stopped_at=now)
            elif self.status.error is not None:
                pass  # a failure stays a failure, whatever the cleanup writes after it
            else:
                update["stopped_at"] = now if stopped else None
            self.status = self.status.model_copy(update=update)
            self._dump(create=True)

    def _dump(self, create: bool) -> None:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(self.status.model_dump_json())
        tmp.replace(self.path)
        self._written = True

    def touch(self) -> None:
        """Heartbeat: mark the file as seen now (only while running)."""
        with self._lock:
            if self._written and not self.ended and self.status.pid == os.getpid():
                try:
                    os.utime(self.path)
                except OSError:
                    pass

    def exit_unreported(self) -> None:
        """At interpreter exit: a worker that wrote neither a stop nor an error failed."""
        with self._lock:
            if not self._written or self.ended or self.status.pid != os.getpid():
                return
            now = time.time()
            self.status = self.status.model_copy(
                update={
                    "error": "exited without reporting a clean stop or an error "
                    "(see the worker's output)",
                    "stopped_at": now,
                    "updated_at": now,
                }
            )
            try:
                self._dump(create=False)  # never recreate a folder that was removed
            except OSError:
                pass


def _start_heartbeat() -> None:
    global _heartbeat
    with _HEARTBEAT_LOCK:
        if _heartbeat is not None and _heartbeat.is_alive():
            return

        def beat() -> None:
            while True:
                time.sleep(HEARTBEAT_S)
                for status_file in list(_LIVE):
                    status_file.touch()

        _heartbeat = threading.Thread(target=beat, name="worker-status-heartbeat", daemon=True)
        _heartbeat.start()


@atexit.register
def _report_unreported_exits() -> None:
    for status_file in list(_LIVE):
        status_file.exit_unreported()


def _load(path: Path) -> WorkerStatus | None:
    try:
        text = path.read_text()
        seen = path.stat().st_mtime
        status = WorkerStatus.model_validate_json(text)
    except (OSError, ValueError):
        return None  # removed meanwhile, or a file from an older version
    status._seen_at = seen
    return status


def _files(folder: Path) -> list[tuple[Path, WorkerStatus]]:
    if not folder.is_dir():
        return []
    loaded = ((path, _load(path)) for path in sorted(folder.glob("*.json")))
    return [(path, status) for path, status in loaded if status is not None]


def _superseded(record: WorkerStatus, same_name: Sequence[WorkerStatus], now: float) -> bool:
    """A dead record is superseded by a healthy process that started after it died."""
    ended = record.ended_at or 0.0
    return any(
        other is not record and other.started_at >= ended and other.healthy(now)
        for other in same_name
    )


def _visible(records: Sequence[WorkerStatus], now: float) -> list[WorkerStatus]:
    """What `status` shows of one name's records: running processes, dead ones not yet
    superseded, and the last session of clean stops when nothing runs."""
    running = [r for r in records if r.state == "running"]
    stopped = [r for r in records if r.state == "stopped"]
    last_session = max((r.started_at for r in stopped), default=None)
    shown = []
    for record in records:
        state = record.state
        if state == "running":
            shown.append(record)
        elif state == "stopped":
            in_last_session = last_session is not None and (record.stopped_at or 0) >= last_session
            if not running and in_last_session:
                shown.append(record)
        elif not _superseded(record, records, now):
            shown.append(record)
    return shown


def _by_name(records: Iterable[WorkerStatus]) -> dict[str, list[WorkerStatus]]:
    groups: dict[str, list[WorkerStatus]] = {}
    for record in sorted(records, key=lambda r: (r.started_at, r.pid)):
        groups.setdefault(record.name, []).append(record)
    return groups


def prune(folder: Path, name: str) -> list[Path]:
    """Remove the files of `name` that no longer matter: clean stops `status` no longer
    shows, deaths superseded and older than the crash-loop window, and dead records beyond
    the newest `KEEP_DEAD`. Running processes are never touched. Returns what was removed."""
    now = time.time()
    mine = [(path, s) for path, s in _files(folder) if s.name == name]
    records = [s for _, s in mine]
    shown = {id(s) for s in _visible(records, now)}
    dead = sorted((s for s in records if s.dead), key=lambda s: s.ended_at or 0.0, reverse=True)
    too_many = {id(s) for s in dead[KEEP_DEAD:]}
    removed = []
    for path, status in mine:
        state = status.state
        drop = id(status) in too_many or (
            id(status) not in shown
            and (
                state == "stopped"
                or (state in DEAD_STATES and (status.ended_at or 0) < now - CRASH_LOOP_WINDOW_S)
            )
        )
        if drop and state != "running":
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_statuses(settings: Settings) -> list[WorkerStatus]:
    """The worker processes `status` shows, oldest first (see the module docstring)."""
    now = time.time()
    shown: list[WorkerStatus] = []
    for records in _by_name(s for _, s in _files(status_dir(settings))).values():
        shown += _visible(records, now)
    return sorted(shown, key=lambda r: (r.started_at, r.pid))


def read_all_statuses(settings: Settings) -> list[WorkerStatus]:
    """Every status record on file, shown or not (for crash-loop counting and tests)."""
    return [s for _, s in _files(status_dir(settings))]


def _summable(key: str, value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return not re.search(r"_p\d+|per_s|rate", key)


def worker_groups(settings: Settings) -> list[WorkerGroup]:
    """One summary per worker name: counts by state, crash loop, last error, totals."""
    now = time.time()
    groups = []
    for name, records in _by_name(read_all_statuses(settings)).items():
        shown = _visible(records, now)
        deaths = [r for r in records if r.dead]
        last_death = max(deaths, key=lambda r: r.ended_at or 0.0, default=None)
        in_window = [r for r in deaths if (r.ended_at or 0) >= now - CRASH_LOOP_WINDOW_S]
        recovered = last_death is not None and _superseded(last_death, records, now)
        counts = {state: sum(r.state == state for r in shown) for state in get_args(State)}
        if len(in_window) >= CRASH_LOOP_DEATHS and not recovered:
            state = "crash_looping"
        elif counts["failed"] or counts["killed"]:
            state = "dead"
        else:
            state = "running" if counts["running"] else "stopped"
        totals: dict[str, float] = {}
        for record in shown:
            for key, value in record.metrics.items():
                if _summable(key, value):
                    totals[key] = totals.get(key, 0.0) + float(value)
        groups.append(
            WorkerGroup(
                name=name,
                state=state,
                **counts,
                deaths_in_window=len(in_window),
                last_error=_death_cause(last_death) if last_death else None,
                last_death_at=last_death.ended_at if last_death else None,
                totals=totals,
                pids=[r.pid for r in shown],
            )
        )
    return groups


def _death_cause(record: WorkerStatus) -> str:
    return record.error or "killed (no error reported: SIGKILL, OOM or a lost host)"


def _seconds(value: object) -> str:
    return f"{value:.1f} s" if isinstance(value, int | float) else "n/a"


def _clock(at: float | None) -> str:
    return datetime.fromtimestamp(at or 0).strftime("%Y-%m-%d %H:%M:%S") if at else "n/a"


def _student(student: dict[str, Any]) -> str:
    """The drift signal's part of a live labeler's line (serving/labeler/drift.py)."""
    name = f"student {student.get('version') or '?'}"
    if student.get("state") != "on":
        return f"{name} not compared ({student.get('reason') or 'off'})"
    groups = [
        (info["rate"], info["rows"], f"{dimension}={group}")
        for dimension in ("lang", "family")
        for group, info in (student.get(dimension) or {}).items()
        if info["rows"] >= student.get("min_rows", 0)
    ]
    alerting = student.get("alerting") or []
    text = f"{name}: {student.get('compared', 0):.0f} rows compared"
    if groups:
        rate, rows, where = max(groups)
        text += f", most disagreement {where} {rate:.1%} of {rows}"
    return text + (f", ALERTING {', '.join(alerting)}" if alerting else "")


def describe(status: WorkerStatus) -> str:
    """One line for `freshlabel status`."""
    m = status.metrics
    age = f"updated {time.time() - status.updated_at:.0f} s ago"
    if status.name in ("labeler", "labeler-backfill"):
        # One class of teacher traffic per process (serving/labeler/metrics.py).
        traffic = m.get("traffic", "live")
        versions = ", ".join(f"{v}: {n:.0f}" for v, n in m.get("versions", {}).items())
        body = (
            f"{traffic}: {m.get('labels_total', 0):.0f} labels ({versions or 'none'}), "
            f"{m.get('labels_per_s', 0)}/s, teacher {m.get(f'{traffic}_pairs_per_s', 0)} "
            f"pairs/s, backlog {m.get('backlog', 0):.0f}, "
            f"dedup hit rate {m.get('dedup_hit_rate', 0):.1%}, teacher call p50 "
            f"{_seconds(m.get('teacher_latency_p50_s'))} / p95 "
            f"{_seconds(m.get('teacher_latency_p95_s'))}, "
        )
        if traffic == "live":
            body += (
                f"freshness p50 {_seconds(m.get('live_freshness_p50_s'))} / p95 "
                f"{_seconds(m.get('live_freshness_p95_s'))}, "
            )
        body += (
            f"{m.get('teacher_errors', 0):.0f} teacher errors, "
            f"{m.get('dead_letters', 0):.0f} to DLQ"
        )
        if m.get("student"):
            body += ", " + _student(m["student"])
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
            f"{m.get('dead_letters', 0):.0f} to DLQ"
        )
        if "records_consumed" in m:
            # Each consumed record's one fate; the five add up to records_consumed.
            body += (
                f", {m.get('duplicates_dropped', 0):.0f} duplicates, "
                f"{m.get('skipped_already_committed', 0):.0f} already committed by another "
                f"writer = {m['records_consumed']:.0f} records consumed, "
                f"{m.get('commit_conflicts', 0):.0f} commit conflicts"
            )
        body += lag
    else:
        body = ", ".join(f"{k} {v}" for k, v in m.items())
    state = status.state
    if state == "failed":
        head = f"failed pid {status.pid} at {_clock(status.ended_at)}: {status.error}; "
    elif state == "killed":
        head = (
            f"killed pid {status.pid} (gone without a word; last seen {_clock(status.ended_at)}); "
        )
    else:
        head = f"{state} pid {status.pid}: "
    return f"{head}{body}; {age}"


def describe_group(group: WorkerGroup) -> str:
    """The summary line of one worker name for `freshlabel status`."""
    parts = [
        f"{getattr(group, state)} {state}"
        for state in ("running", "stopped", "failed", "killed")
        if getattr(group, state)
    ]
    line = ", ".join(parts) or "no process shown"
    if group.state == "crash_looping":
        line = (
            f"CRASH-LOOPING: {group.deaths_in_window} deaths in the last "
            f"{CRASH_LOOP_WINDOW_S / 60:.0f} min, last error: {group.last_error}; restart it "
            f"once the cause is fixed ({line})"
        )
    elif group.dead:
        line += f"; last death {_clock(group.last_death_at)}: {group.last_error}"
    return line
