"""`freshlabel status` never hides a dead worker.

Real sink processes on a real broker and catalog: two on one table are both listed; one
SIGKILLed is listed as killed (exit 1) until a newer sink of that table runs healthily; one
that dies on an exception is listed as failed with its error. The crash-loop and pruning
rules are checked on status files written directly (no processes needed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from infra import worker_status
from infra.config import Settings
from infra.kafka_io import producer
from infra.worker_status import (
    CRASH_LOOP_DEATHS,
    KEEP_DEAD,
    StatusFile,
    WorkerStatus,
    read_all_statuses,
    read_statuses,
    worker_groups,
)
from streams.produce import produce_events
from tests.conftest import ROOT, freshlabel, settings_env
from tests.helpers import reap, sink_argv, start_sink
from tests.test_sink_faults import impressions

ROWS = 400

# Runs the sink CLI with its commit bookkeeping broken: it dies on the first commit.
FAILING_SINK = """
import sys
import streams.sink_metrics as metrics

def broken(self, *args, **kwargs):
    raise RuntimeError("injected failure: metrics volume full")

metrics.SinkMetrics.record_commit = broken
from freshlabel.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def fed_stack(running_stack: Settings) -> Settings:
    with producer(running_stack) as prod:
        produce_events(prod, impressions(ROWS, "status"))
    return running_stack


def status_json(settings: Settings) -> tuple[int, dict[str, Any]]:
    shown = freshlabel(settings, "status", "--json")
    return shown.returncode, json.loads(shown.stdout)


def group(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(g for g in body["worker_groups"] if g["name"] == name)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 150) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def records_of(settings: Settings, name: str) -> list[WorkerStatus]:
    return [s for s in read_all_statuses(settings) if s.name == name]


def test_parallel_sinks_are_both_listed_and_a_sigkilled_one_is_dead(fed_stack: Settings) -> None:
    settings = fed_stack
    name = "sink-ws_pair"
    # Static halves: the test is about status, not about the broker's group coordinator
    # (tests/test_sink_faults.py covers that).
    procs = [
        start_sink(
            settings,
            "ws_pair",
            "--assignment",
            "static",
            "--workers",
            "2",
            "--worker-index",
            str(i),
            log=settings.state_dir / f"ws_pair-{i}.log",
        )
        for i in range(2)
    ]
    try:
        pids = {p.pid for p in procs}

        def both_up_and_done() -> bool:
            records = records_of(settings, name)
            rows = sum(r.metrics.get("rows_committed", 0) for r in records)
            return {r.pid for r in records} == pids and rows >= ROWS

        wait_for("two status files and every row committed", both_up_and_done)
        code, body = status_json(settings)
        assert code == 0, body
        pair = group(body, name)
        assert (pair["state"], pair["running"], sorted(pair["pids"])) == (
            "running",
            2,
            sorted(pids),
        )
        assert pair["totals"]["rows_committed"] == ROWS

        victim, survivor = procs
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
        code, body = status_json(settings)
        assert code == 1
        assert [(w["pid"], w["state"]) for w in body["dead_workers"]] == [(victim.pid, "killed")]
        pair = group(body, name)
        assert (pair["state"], pair["running"], pair["killed"]) == ("dead", 1, 1)
        assert body["healthy"] is False

        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=60) == 0
        code, body = status_json(settings)
        assert code == 1, "a clean stop of the other sink must not hide the killed one"
        assert {(w["pid"], w["state"]) for w in body["workers"] if w["name"] == name} == {
            (victim.pid, "killed"),
            (survivor.pid, "stopped"),
        }
        text = freshlabel(settings, "status")
        line = next(
            li for li in text.stdout.splitlines() if li.startswith(("ok", "DIED")) and name in li
        )
        assert line.startswith("DIED"), text.stdout
        assert f"pid {victim.pid} (killed)" in text.stdout
    finally:
        reap(procs, timeout_s=30)

    # A newer sink of the table that runs healthily (here: to a clean stop) clears it.
    again = start_sink(settings, "ws_pair", "--idle-timeout", "2")
    out, _ = again.communicate(timeout=240)
    assert again.returncode == 0, out.decode()[-3000:]
    code, body = status_json(settings)
    assert group(body, name)["state"] == "stopped"
    assert [w["pid"] for w in body["workers"] if w["name"] == name] == [again.pid]
    assert not [w for w in body["dead_workers"] if w["name"] == name]


def test_a_sink_that_raises_is_failed_with_its_error(fed_stack: Settings) -> None:
    settings = fed_stack
    name = "sink-ws_fail"
    proc = subprocess.run(
        [sys.executable, "-c", FAILING_SINK, *sink_argv("ws_fail", "--idle-timeout", "30")],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode != 0, proc.stdout + proc.stderr
    code, body = status_json(settings)
    assert code == 1
    failed = [w for w in body["dead_workers"] if w["name"] == name]
    assert [(w["pid"], w["state"]) for w in failed] == [(failed[0]["pid"], "failed")]
    assert "RuntimeError: injected failure: metrics volume full" in failed[0]["error"]
    assert failed[0]["ended_at"] is not None
    assert group(body, name)["last_error"] == failed[0]["error"]
    text = freshlabel(settings, "status").stdout
    line = next(li for li in text.splitlines() if li.startswith(("ok", "DIED")) and name in li)
    assert line.startswith("DIED") and "injected failure" in line, text


# Status files written directly: the rules without processes. -----------------------------


def dead_record(name: str, pid: int, ended: float, error: str | None = "boom") -> WorkerStatus:
    return WorkerStatus(
        name=name,
        pid=pid,
        start_ticks=1,  # never this process's start time: a PID now gone or reused
        host=worker_status.HOST,
        started_at=ended - 5,
        updated_at=ended,
        stopped_at=ended if error else None,
        error=error,
        writes=1,
    )


def put(settings: Settings, record: WorkerStatus) -> Path:
    folder = worker_status.status_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record.name}@{record.pid}-{record.start_ticks}-0.json"
    path.write_text(record.model_dump_json())
    os.utime(path, (record.updated_at, record.updated_at))
    return path


def test_crash_loop_is_shown_until_a_healthy_restart(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    now = time.time()
    for i in range(CRASH_LOOP_DEATHS):
        put(settings, dead_record("sink-loop", 10_000 + i, now - 60 + 10 * i, f"ValueError: {i}"))
    put(settings, dead_record("sink-loop", 10_100, now - 20, error=None))  # SIGKILLed
    (loop,) = worker_groups(settings)
    assert loop.state == "crash_looping" and loop.dead
    assert loop.deaths_in_window == CRASH_LOOP_DEATHS + 1
    assert loop.last_error and "killed" in loop.last_error
    assert {s.state for s in read_statuses(settings)} == {"failed", "killed"}

    healthy = StatusFile(settings, "sink-loop")  # a newer process (this one) ...
    healthy.write({"rows_committed": 5})
    assert worker_groups(settings)[0].state == "crash_looping"  # ... not yet past its start
    healthy.write({"rows_committed": 9})  # ... that reported a batch
    (loop,) = worker_groups(settings)
    assert (loop.state, loop.running, loop.failed, loop.killed) == ("running", 1, 0, 0)
    assert [s.state for s in read_statuses(settings)] == ["running"]
    healthy.write({"rows_committed": 9}, stopped=True)


def test_an_error_stays_a_failure_and_files_are_per_process(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    first, second = StatusFile(settings, "labeler"), StatusFile(settings, "labeler")
    assert first.path != second.path
    first.write({"labels_total": 1})
    second.write({"labels_total": 2}, error="TimeoutError: teacher gone\n  traceback line")
    second.write({"labels_total": 2}, stopped=True)  # the cleanup's clean-stop write
    states = sorted((s.state, s.error) for s in read_statuses(settings))
    assert states == [("failed", "TimeoutError: teacher gone"), ("running", None)]
    first.write({"labels_total": 3}, stopped=True)


def test_a_reused_pid_is_killed_and_dead_records_are_bounded(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    reused = dead_record("sink-x", os.getpid(), time.time() - 30, error=None)
    put(settings, reused)
    assert [s.state for s in read_statuses(settings)] == ["killed"]
    for i in range(KEEP_DEAD + 5):
        put(settings, dead_record("sink-x", 20_000 + i, time.time() - 100 - i))
    StatusFile(settings, "sink-x")  # a new worker prunes what no longer matters
    assert len([s for s in read_all_statuses(settings) if s.dead]) == KEEP_DEAD
