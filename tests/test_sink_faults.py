"""The sink under faults: SIGKILL mid-run, several processes on one topic, redelivered events."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from pyiceberg.exceptions import NoSuchTableError

from infra.catalog import open_catalog
from infra.config import Settings
from infra.kafka_io import producer
from schemas import Impression
from streams.iceberg_sink import IcebergSink
from streams.produce import produce_events
from tests.conftest import ROOT, settings_env
from tests.helpers import impression_fields, reap, start_sink

# Every test runs sinks against a broker: its own stack or running_stack.
pytestmark = pytest.mark.stack

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def impressions(n: int, prefix: str) -> list[Impression]:
    return [
        Impression(
            **impression_fields(
                f"{prefix}-{i}",
                T0 + timedelta(seconds=30 * i),
                request_id=f"r-{i // 10}",
                user_id=f"u-{i % 97}",
                query=f"query {i % 50}",
                pin_id=f"p-{i % 500}",
                position=i % 10 + 1,
            )
        )
        for i in range(n)
    ]


def sink_process(settings: Settings, table: str) -> subprocess.Popen[bytes]:
    return start_sink(settings, table, "--batch-rows", "1000", "--idle-timeout", "6")


def table_ids(settings: Settings, table: str) -> list[str]:
    catalog = open_catalog(settings)
    scan = catalog.load_table(f"freshlabel.{table}").scan(selected_fields=("impression_id",))
    return scan.to_arrow().column("impression_id").to_pylist()


def row_count(settings: Settings, table: str) -> int:
    """Rows in the table now; 0 while the sink has not created it."""
    try:
        return len(table_ids(settings, table))
    except NoSuchTableError:
        return 0


def snapshots(settings: Settings, table: str) -> int:
    try:
        return len(open_catalog(settings).load_table(f"freshlabel.{table}").metadata.snapshots)
    except Exception:
        return 0


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_commits_each_row_once(running_stack: Settings) -> None:
    settings = running_stack
    rows = impressions(20_000, "kill")
    with producer(settings) as prod:
        produce_events(prod, rows)
    table = "impressions"
    for kills in range(3):  # kill it a few times, at different points
        proc = sink_process(settings, table)
        before = snapshots(settings, table)
        deadline = time.monotonic() + 120
        while snapshots(settings, table) < before + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.15 * kills)  # land the kill at a different point of the next batch
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert len(table_ids(settings, table)) < len(rows), "the kills came too late to matter"
    final = sink_process(settings, table)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out.decode()
    ids = table_ids(settings, table)
    assert len(ids) == len(rows) and set(ids) == {r.impression_id for r in rows}


@pytest.mark.slow
def test_two_sink_processes_split_partitions(tmp_path_factory: pytest.TempPathFactory) -> None:
    from infra import stack
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("two") / "state")
    stack.up(settings)
    try:
        rows = impressions(12_000, "two")
        with producer(settings) as prod:
            produce_events(prod, rows)
        procs = [sink_process(settings, "impressions") for _ in range(2)]
        outputs = [p.communicate(timeout=300)[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        ids = table_ids(settings, "impressions")
        assert len(ids) == len(rows) and set(ids) == {r.impression_id for r in rows}
    finally:
        stack.down(settings)


def test_redelivered_events_are_kept_once(running_stack: Settings) -> None:
    settings = running_stack
    first = impressions(300, "dup")
    with producer(settings) as prod:
        produce_events(prod, first)
        produce_events(prod, first[100:200])  # a producer retry / restored job re-sends these
    sink = IcebergSink(settings, "impressions", "impressions_dedupe_test", batch_seconds=60)
    stats = sink.run(idle_timeout_s=3.0)
    # earlier tests in this module wrote to the same topic: only count this test's rows
    ids = [i for i in table_ids(settings, "impressions_dedupe_test") if i.startswith("dup-")]
    assert sorted(ids) == sorted(r.impression_id for r in first)
    assert stats.duplicates_dropped >= 100
    # and a redelivery in a later batch, after a restart, is caught against the table
    with producer(settings) as prod:
        produce_events(prod, first[:50])
    again = IcebergSink(settings, "impressions", "impressions_dedupe_test", batch_seconds=60)
    stats = again.run(idle_timeout_s=3.0)
    assert stats.rows_committed == 0 and stats.duplicates_dropped == 50
    ids = [i for i in table_ids(settings, "impressions_dedupe_test") if i.startswith("dup-")]
    assert len(ids) == 300


def churn_sink(
    settings: Settings, table: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """A sink process that runs until stopped (or `--idle-timeout` in `args`), committing
    small batches often; `env` adds settings to its environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "freshlabel.cli", "sink", "run", "--topic", "impressions"]
        + ["--table", table, "--batch-rows", "2000", "--batch-seconds", "1", *args],
        env={**settings_env(settings), **(env or {})},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def assert_drained_exactly_once(settings: Settings, table: str, rows: list[Impression]) -> None:
    """One static sink reads every partition to the end; the table then holds each row once."""
    drain = churn_sink(
        settings,
        table,
        "--assignment",
        "static",
        "--workers",
        "1",
        "--worker-index",
        "0",
        "--idle-timeout",
        "8",
    )
    _, err = drain.communicate(timeout=300)
    assert drain.returncode == 0, err.decode()[-2000:]
    ids = table_ids(settings, table)
    assert len(ids) == len(rows), f"{len(ids) - len(set(ids))} duplicated, or rows missing"
    assert set(ids) == {r.impression_id for r in rows}


@pytest.mark.slow
def test_overlapping_sinks_churned_by_sigterm_and_sigkill_lose_and_repeat_nothing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Three sink processes whose partitions overlap (static workers 0/2 and 1/2 beside one
    that takes every partition), killed and restarted over 50,000 records while commits are
    in flight: every record once."""
    import random

    from infra import stack
    from tests.conftest import make_settings

    settings = make_settings(tmp_path_factory.mktemp("churn") / "state")
    stack.up(settings)
    table = "impressions_churn"
    roles = [
        ("--assignment", "static", "--workers", "2", "--worker-index", "0"),
        ("--assignment", "static", "--workers", "2", "--worker-index", "1"),
        ("--assignment", "static", "--workers", "1", "--worker-index", "0"),
    ]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        rows = impressions(50_000, "churn")
        procs = [churn_sink(settings, table, *role) for role in roles]

        def produce_slowly() -> None:  # ~20 s of traffic, so the kills land mid-stream
            with producer(settings) as prod:
                for start in range(0, len(rows), 1000):
                    produce_events(prod, rows[start : start + 1000])
                    time.sleep(0.4)

        feeder = threading.Thread(target=produce_slowly)
        feeder.start()
        rng = random.Random(11)
        kills = {signal.SIGKILL: 0, signal.SIGTERM: 0}
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and (min(kills.values()) < 4 or feeder.is_alive()):
            time.sleep(rng.uniform(0.8, 2.0))
            victim = rng.randrange(len(procs))
            how = signal.SIGKILL if sum(kills.values()) % 2 == 0 else signal.SIGTERM
            procs[victim].send_signal(how)
            procs[victim].wait(timeout=60)
            kills[how] += 1
            procs[victim] = churn_sink(settings, table, *roles[victim])
        feeder.join(timeout=60)
        assert min(kills.values()) >= 4
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            # -15: stopped while still starting, before its SIGTERM handler was installed.
            assert proc.returncode in (0, -signal.SIGTERM), err.decode()[-2000:]
        assert_drained_exactly_once(settings, table, rows)
    finally:
        reap(procs)
        stack.down(settings)


@pytest.mark.slow
def test_sink_rides_out_a_broker_kill_and_restart(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The durable broker is SIGKILLed under a running sink and brought back by `up`: the
    sink reconnects by itself and every record, before and after, lands once."""
    from infra import stack
    from tests.conftest import freshlabel, make_settings

    settings = make_settings(tmp_path_factory.mktemp("brokerkill") / "state")
    assert freshlabel(settings, "up", "--durable").returncode == 0
    table = "impressions_brokerkill"
    sink = None
    try:
        before, after = impressions(3_000, "pre"), impressions(3_000, "post")
        with producer(settings) as prod:
            produce_events(prod, before)
        sink = churn_sink(settings, table)
        deadline = time.monotonic() + 120
        while row_count(settings, table) < len(before) and time.monotonic() < deadline:
            time.sleep(0.5)
        broker = {s.name: s for s in stack.read_state(settings).services}["broker"]  # type: ignore[union-attr]
        os.kill(broker.pid, signal.SIGKILL)
        time.sleep(8)  # the sink meets a dead broker for a while
        assert sink.poll() is None, "the sink died with the broker"
        again = freshlabel(settings, "up", "--durable")
        assert again.returncode == 0, again.stderr
        with producer(settings) as prod:
            produce_events(prod, after)
        deadline = time.monotonic() + 180
        while row_count(settings, table) < len(before) + len(after):
            assert time.monotonic() < deadline, "the sink did not resume after the restart"
            assert sink.poll() is None, sink.communicate()[1].decode()[-2000:]
            time.sleep(1)
        sink.send_signal(signal.SIGTERM)
        _, err = sink.communicate(timeout=120)
        assert sink.returncode == 0, err.decode()[-2000:]
        ids = table_ids(settings, table)
        assert len(ids) == len(before) + len(after)
        assert set(ids) == {r.impression_id for r in before + after}
    finally:
        if sink is not None and sink.poll() is None:
            sink.kill()
            sink.wait()
        freshlabel(settings, "down")


@pytest.mark.slow
def test_group_churn_recovers_or_names_the_stuck_group(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Group-mode sinks stopped 3-4 s after another joins (the embedded broker can wedge the
    group there): each sink finishes, or stops with an error naming the stuck group; a
    static drain then finds every record once."""
    from infra import stack
    from tests.conftest import make_settings

    settings = make_settings(
        tmp_path_factory.mktemp("groupchurn") / "state",
        sink={"join_timeout_s": 6, "join_attempts": 2},
    )
    env_extra = {"FRESHLABEL_SINK__JOIN_TIMEOUT_S": "6", "FRESHLABEL_SINK__JOIN_ATTEMPTS": "2"}
    stack.up(settings)
    table = "impressions_groupchurn"
    procs: list[subprocess.Popen[bytes]] = []

    def group_sink() -> subprocess.Popen[bytes]:
        proc = churn_sink(settings, table, "--idle-timeout", "10", env=env_extra)
        procs.append(proc)
        return proc

    try:
        rows = impressions(8_000, "group")
        with producer(settings) as prod:
            produce_events(prod, rows)
        first = group_sink()
        time.sleep(6)
        for pause in (3.0, 3.5, 4.0):
            joiner = group_sink()
            time.sleep(pause)
            joiner.send_signal(signal.SIGTERM)
        group_sink()
        for proc in procs:
            _, err = proc.communicate(timeout=240)
            text = err.decode()
            assert proc.returncode in (0, -signal.SIGTERM) or "stuck rebalancing" in text, text[
                -2000:
            ]
        assert first.returncode is not None
        assert_drained_exactly_once(settings, table, rows)
    finally:
        reap(procs)
        stack.down(settings)


def test_a_group_that_never_assigns_is_left_for_static_reading_or_named(
    running_stack: Settings,
) -> None:
    """A join slower than sink.join_timeout_s stands in for a wedged group: the sink reads
    every partition without the group (on_stuck_group=static) and commits each row once;
    with on_stuck_group=fail it stops with one line naming the stuck group."""
    from streams.iceberg_sink import SinkError

    rows = impressions(2_000, "stuck")
    with producer(running_stack) as prod:
        produce_events(prod, rows)
    impatient = running_stack.model_copy(deep=True)
    impatient.sink.join_timeout_s = 0.3
    impatient.sink.join_attempts = 2
    impatient.sink.on_stuck_group = "fail"
    with pytest.raises(SinkError, match="stuck rebalancing.*answers metadata"):
        IcebergSink(impatient, "impressions", "impressions_stuck", group_id="stuck-group").run(
            idle_timeout_s=3.0
        )
    impatient.sink.on_stuck_group = "static"
    sink = IcebergSink(impatient, "impressions", "impressions_stuck", group_id="stuck-group")
    stats = sink.run(idle_timeout_s=3.0)
    assert stats.static_fallback and stats.rejoins == 2
    ids = [i for i in table_ids(running_stack, "impressions_stuck") if i.startswith("stuck-")]
    assert sorted(ids) == sorted(r.impression_id for r in rows)
