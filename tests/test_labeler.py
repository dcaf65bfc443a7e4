"""The continuous labeler on the real stack: broker, catalog, Triton serving a real teacher.

One module-scoped world: a broker + catalog, two tiny teachers (v1, v2) and a Triton that
polls its repository, so exporting version 2 rolls the served model without a restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from base64 import b64encode
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from infra import triton
from infra.catalog import open_catalog
from infra.config import GeneratorSettings, Settings
from infra.kafka_io import producer, read_all
from infra.process import port_free, stop
from schemas import EnrichedImpression
from serving.labeler.cache import ScoreCache, cache_key, input_hash
from serving.labeler.labeler import Labeler
from serving.labeler.triton_scorer import TritonScorer
from serving.teacher.data import load_pairs
from serving.teacher.export import ExportOptions, export_teacher
from serving.teacher.train import TrainConfig, train_teacher
from streams.dlq import DeadLetter, Reason
from streams.enrich.reference import expected, load_events
from streams.generator import generate_events
from streams.iceberg_sink import IcebergSink
from streams.produce import produce_events
from tests.conftest import ROOT, freshlabel, starts_servers
from tests.teacher_fixtures import (
    QUERIES,
    TITLES,
    LabelerStack,
    labeler_env,
    labeler_stack,
    search_traffic,
    start_cli,
    world_sample,
)

TINY = TrainConfig(epochs=1, max_steps=3, max_length=48, batch_size=16, val_fraction=0.25)
# One torch thread per Triton instance: the teacher gets one of the two cores and the
# labeler, the broker and the test the other, as when Triton runs on its own machine.
# Without it a saturated teacher's threads take CPU from every other process, which no
# request priority can give back (measured in docs/labeling.md).
SERVED = ExportOptions(model_threads=1)


def enriched_rows(n: int, prefix: str) -> list[EnrichedImpression]:
    """A minute apart; a pin keeps its title, and pin-0 has a caption."""
    return search_traffic(n, prefix, step=timedelta(minutes=1), titles_by_pin=True, captions=True)


def label_until_idle(settings: Settings) -> None:
    """Run a labeler on `settings` until it has been idle for 3 s."""

    async def label() -> None:
        scorer = TritonScorer.from_settings(settings)
        try:
            await Labeler(settings, scorer).run(idle_timeout_s=3.0)
        finally:
            await scorer.close()

    asyncio.run(label())


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    data = load_pairs(world_sample(root / "world.parquet"), "world")
    out = {}
    for version in ("labeler-v1", "labeler-v2"):
        out[version] = root / version
        train_teacher(data, out[version], TINY, version=version)
    return out


Platform = LabelerStack
# `freshlabel label backfill --teacher-version V` in a subprocess, less V.
BACKFILL = [sys.executable, "-m", "freshlabel.cli", "label", "backfill", "--teacher-version"]


@pytest.fixture(scope="module")
@starts_servers
def platform(
    tmp_path_factory: pytest.TempPathFactory, teachers: dict[str, Path]
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("labeler")
    repo = root / "repo"
    export_teacher(teachers["labeler-v1"], repo, 1, SERVED)
    with labeler_stack(root / "state", repo, repository_poll_s=1) as running:
        yield running


def _labels_in_iceberg(settings: Settings) -> Counter[tuple[str, str]]:
    sink = IcebergSink(settings, "labels", "labels", batch_seconds=60)
    sink.run(idle_timeout_s=3.0)
    table = open_catalog(settings).load_table("freshlabel.labels")
    rows = table.scan(selected_fields=("impression_id", "teacher_version")).to_arrow()
    return Counter(zip(rows.column(0).to_pylist(), rows.column(1).to_pylist(), strict=True))


def test_every_row_labeled_once_through_a_triton_outage(platform: Platform) -> None:
    settings = platform.settings
    rows = enriched_rows(600, "outage")
    with producer(settings) as prod:
        produce_events(prod, rows[:300])
    labeler = subprocess.Popen(
        [sys.executable, "-m", "freshlabel.cli", "label", "run", "--idle-timeout", "40"],
        env=labeler_env(settings),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        # Wait for the first labels, then take Triton away for 20 s while rows keep coming.
        deadline = time.monotonic() + 120
        while not read_all(settings, "labels", 0.5) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert stop(platform.triton), "Triton did not stop"
        assert port_free(settings.triton.host, settings.triton.grpc_port)
        with producer(settings) as prod:
            produce_events(prod, rows[300:])
        time.sleep(20)
        platform.triton = triton.start_triton(settings)
        triton.wait_ready(settings, platform.triton)
        out, _ = labeler.communicate(timeout=300)
    finally:
        if labeler.poll() is None:
            labeler.kill()
    assert labeler.returncode == 0, out.decode()[-3000:]
    assert b"teacher unavailable" in out  # it noticed the outage and waited
    labels = _labels_in_iceberg(settings)
    mine = {k: n for k, n in labels.items() if k[0].startswith("outage-")}
    assert {k[0] for k in mine} == {r.impression_id for r in rows}
    assert set(mine.values()) == {1}
    assert {k[1] for k in mine} == {"labeler-v1"}
    # `freshlabel status` shows the labeler's and the labels sink's health from their files.
    shown = freshlabel(settings, "status", "--json")
    workers = {w["name"]: w for w in json.loads(shown.stdout)["workers"]}
    labeler_status = workers["labeler"]
    assert labeler_status["state"] == "stopped"
    assert labeler_status["metrics"]["versions"] == {"labeler-v1": 600}
    assert labeler_status["metrics"]["teacher_errors"] >= 1  # the outage
    assert labeler_status["metrics"]["teacher_latency_p95_s"] > 0
    assert 0 < labeler_status["metrics"]["dedup_hit_rate"] <= 1
    assert labeler_status["metrics"]["backlog"] == 0
    sink_status = workers["sink-labels"]["metrics"]
    assert sink_status["rows_committed"] >= 600 and sink_status["visible_lag_p95_s"] > 0
    text = freshlabel(settings, "status").stdout
    assert "labeler" in text and "dedup hit rate" in text and "impression_time -> visible" in text


def seeded_enriched(impressions: int) -> list[EnrichedImpression]:
    """A seeded generator world's impressions with their point-in-time features, as the
    enrichment job emits them (computed by its Python reference, no Flink needed)."""
    world = GeneratorSettings(impressions=impressions, pins=120, users=80, queries_file=None)
    log = load_events(generate_events(world))
    features = expected(log)
    return [
        EnrichedImpression(**imp.model_dump(), **features[iid])
        for iid, imp in log.impressions.items()
    ]


def _label_ids(settings: Settings, wanted: set[str]) -> int:
    ids = (json.loads(r.value)["impression_id"] for r in read_all(settings, "labels", 0.5))
    return len(wanted.intersection(ids))


def test_seeded_run_survives_sigkill_and_sends_a_malformed_row_to_the_dlq(
    platform: Platform,
) -> None:
    settings = platform.settings
    rows = seeded_enriched(1500)
    wanted = {r.impression_id for r in rows}
    assert len(wanted) == len(rows) >= 1500
    broken = b'{"impression_id": "broken-1", "query": '  # cut off mid-record
    with producer(settings) as prod:
        produce_events(prod, rows[: len(rows) // 2])
        prod.send("impressions.enriched", key=b"broken-1", value=broken).get(timeout=30)
        produce_events(prod, rows[len(rows) // 2 :])
    command = [sys.executable, "-m", "freshlabel.cli", "label", "run", "--idle-timeout", "15"]
    first = subprocess.Popen(command, env=labeler_env(settings), cwd=ROOT)
    try:
        deadline = time.monotonic() + 180
        while _label_ids(settings, wanted) < 200 and time.monotonic() < deadline:
            assert first.poll() is None, "the labeler ended before it was killed"
            time.sleep(0.2)
        assert _label_ids(settings, wanted) >= 200
    finally:
        os.kill(first.pid, signal.SIGKILL)  # no final commit, no goodbye
        first.wait(timeout=30)
    assert _label_ids(settings, wanted) < len(rows), "killed too late to test a restart"
    again = subprocess.run(
        command, env=labeler_env(settings), cwd=ROOT, capture_output=True, timeout=600
    )
    assert again.returncode == 0, again.stdout.decode()[-3000:] + again.stderr.decode()[-3000:]

    labels = _labels_in_iceberg(settings)
    served = {v for (i, v) in labels if i in wanted}
    assert len(served) == 1, f"one served version expected, got {served}"
    version = served.pop()
    assert {i for (i, v) in labels if v == version and i in wanted} == wanted
    assert {n for (i, _), n in labels.items() if i in wanted} == {1}
    dead = [
        DeadLetter.model_validate_json(r.value)
        for r in read_all(settings, "impressions.enriched.dlq", 0.5)
    ]
    mine = [
        d
        for d in dead
        if d.consumer == settings.labeler.group_id and d.value_b64 == b64encode(broken).decode()
    ]
    # Killed after the DLQ write but before its offset commit, the restart may send it again.
    assert mine and {d.reason for d in mine} == {Reason.MALFORMED_JSON}, dead
    assert len({d.offset for d in mine}) == 1


def test_version_roll_then_backfill(platform: Platform, teachers: dict[str, Path]) -> None:
    settings = platform.settings
    rows = enriched_rows(240, "roll")
    with producer(settings) as prod:
        produce_events(prod, rows[:120])
    label_until_idle(settings)
    # Roll: export version 2 into the served repository; Triton polls and swaps it in.
    assert settings.triton.repository is not None
    export_teacher(teachers["labeler-v2"], settings.triton.repository, 2, SERVED)
    deadline = time.monotonic() + 120
    while triton.served_versions(settings) != ["2"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert triton.served_versions(settings) == ["2"]
    with producer(settings) as prod:
        produce_events(prod, rows[120:])
    label_until_idle(settings)

    labels = _labels_in_iceberg(settings)
    mine = Counter({k: n for k, n in labels.items() if k[0].startswith("roll-")})
    first = {r.impression_id for r in rows[:120]}
    assert {i for i, v in mine if v == "labeler-v1"} == first
    assert {i for i, v in mine if v == "labeler-v2"} == {r.impression_id for r in rows[120:]}

    # Backfills read history from Iceberg: commit the enriched rows there first.
    IcebergSink(settings, "impressions.enriched", "impressions_enriched").run(idle_timeout_s=3.0)
    env = labeler_env(settings)
    for _ in range(2):  # the second run finds nothing left to do
        result = subprocess.run(
            [*BACKFILL, "labeler-v2"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        labels = _labels_in_iceberg(settings)
    mine = Counter({k: n for k, n in labels.items() if k[0].startswith("roll-")})
    assert {i for i, v in mine if v == "labeler-v2"} == {r.impression_id for r in rows}
    assert set(mine.values()) == {1}, "a label twice for one (impression, version)"
    assert '"labeled":0' in result.stdout.replace(" ", "")


# Live traffic of the priority test: unique pairs (no cache hits) at a steady rate, in
# windows that alternate between the backfill paused and running.
LIVE_RATE = 20.0
WINDOW_S = 4.0
WINDOWS = 6
HISTORY_ROWS = 20_000
SINK_BATCH_S = 2.0


def _unique_row(prefix: str, i: int, at: datetime) -> EnrichedImpression:
    return EnrichedImpression(
        impression_id=f"{prefix}-{i}",
        request_id=f"{prefix}-r{i}",
        user_id=f"u{i % 13}",
        query=QUERIES[i % len(QUERIES)],
        pin_id=f"{prefix}-pin-{i}",
        position=i % 5 + 1,
        country="US",
        locale="en-US",
        event_time=at,
        title=f"{TITLES[i % 4]} number {i}",
    )


def _write_history(settings: Settings, prefix: str, n: int) -> None:
    """`n` enriched rows of unique pairs straight into Iceberg (as the enriched sink would
    have committed them), never seen by the live stream."""
    import pyarrow as pa

    from infra.catalog import ensure_all_tables

    catalog = open_catalog(settings)
    ensure_all_tables(settings, catalog)
    table = catalog.load_table(f"{settings.catalog.namespace}.impressions_enriched")
    now = datetime.now(UTC)
    rows = [
        {
            **_unique_row(prefix, i, now - timedelta(hours=1)).model_dump(),
            "_kafka_partition": 0,
            "_kafka_offset": 10_000_000 + i,
            "_batch_id": f"{prefix}-history",
            "_ingested_at": now,
        }
        for i in range(n)
    ]
    table.append(pa.Table.from_pylist(rows, schema=table.schema().as_arrow()))


class _LabelWatch:
    """Follows the labels topic from its start: each label's send time minus its
    impression's event time (the labeler's freshness up to the broker), by impression."""

    def __init__(self, settings: Settings) -> None:
        from kafka import TopicPartition

        from infra.kafka_io import consumer

        self.reader = consumer(settings, None)
        parts = self.reader.partitions_for_topic("labels") or set()
        self.reader.assign([TopicPartition("labels", p) for p in sorted(parts)])
        self.reader.seek_to_beginning()
        self.lags: dict[str, float] = {}
        self.versions: set[str] = set()

    def wait_for(self, prefix: str, count: int, timeout_s: float = 120.0) -> list[float]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for batch in self.reader.poll(timeout_ms=200).values():
                for record in batch:
                    label = json.loads(record.value)
                    started = datetime.fromisoformat(label["impression_time"]).timestamp()
                    self.lags[label["impression_id"]] = record.timestamp / 1000 - started
                    self.versions.add(label["teacher_version"])
            mine = [lag for iid, lag in self.lags.items() if iid.startswith(prefix + "-")]
            if len(mine) >= count:
                return mine
        raise AssertionError(f"only {len(mine)} of {count} {prefix} rows labeled in time")

    def close(self) -> None:
        self.reader.close()


def _live_windows(settings: Settings, watch: _LabelWatch, backfill_pid: int) -> dict[str, bool]:
    """Send `LIVE_RATE` unique rows/s (event time = sending time) for `WINDOWS` windows of
    `WINDOW_S`, the backfill paused (SIGSTOP of the PID this test started) in the even ones
    and running in the odd ones; the machine's other load drifts alike over both.

    Returns:
        Each live impression id, and whether the backfill ran while it was sent.
    """
    per_window = int(LIVE_RATE * WINDOW_S)
    running: dict[str, bool] = {}
    with producer(settings) as prod:
        start = time.monotonic()
        for w in range(WINDOWS):
            competing = w % 2 == 1
            os.kill(backfill_pid, signal.SIGCONT if competing else signal.SIGSTOP)
            for j in range(per_window):
                i = w * per_window + j
                time.sleep(max(0.0, start + i / LIVE_RATE - time.monotonic()))
                row = _unique_row("live", i, datetime.now(UTC))
                prod.send(row.topic, key=row.key.encode(), value=row.to_bytes())
                running[row.impression_id] = competing
        prod.flush(timeout=30)
    os.kill(backfill_pid, signal.SIGCONT)
    watch.wait_for("live", len(running))
    return running


def _visible_lags(settings: Settings, ids: set[str], timeout_s: float = 60.0) -> dict[str, float]:
    """Seconds from each impression's event time to its label's visibility in Iceberg (the
    labels sink's commit), once all of `ids` are visible."""
    from serving.labeler.freshness import visible_at

    deadline = time.monotonic() + timeout_s
    while True:
        table = open_catalog(settings).load_table(f"{settings.catalog.namespace}.labels")
        fields = ("impression_id", "_ingested_at", "impression_time")
        rows = table.scan(selected_fields=fields).to_arrow().to_pylist()
        mine = [r for r in rows if r["impression_id"] in ids]
        if len({r["impression_id"] for r in mine}) == len(ids):
            break
        assert time.monotonic() < deadline, f"{len(mine)} of {len(ids)} labels visible"
        time.sleep(1.0)
    seen = visible_at(table, [r["_ingested_at"].timestamp() for r in mine])
    return {
        r["impression_id"]: float(at) - r["impression_time"].timestamp()
        for r, at in zip(mine, seen, strict=True)
    }


def _backfill_pairs(settings: Settings) -> float:
    from infra.worker_status import read_statuses

    found = [s for s in read_statuses(settings) if s.name == "labeler-backfill"]
    return found[-1].metrics.get("teacher_pairs", 0.0) if found else 0.0


@pytest.mark.slow
def test_a_running_backfill_keeps_live_freshness_within_1_5x(
    platform: Platform, tmp_path: Path
) -> None:
    """Fresh traffic first: live p95 freshness with a 20,000-row backfill competing for the
    teacher stays within 1.5x of the live-only figure, at the same live rate."""
    import numpy as np

    settings = platform.settings
    _write_history(settings, "history", HISTORY_ROWS)
    env = labeler_env(settings)
    live = start_cli(settings, tmp_path / "live-labeler.log", "label", "run")
    # Freshness as the platform defines it ends when the label is visible in Iceberg.
    sink = start_cli(
        settings,
        tmp_path / "labels-sink.log",
        *("sink", "run", "--topic", "labels", "--batch-seconds", str(SINK_BATCH_S)),
    )
    watch = _LabelWatch(settings)
    bulk: subprocess.Popen[bytes] | None = None
    try:
        with producer(settings) as prod:  # warm: group joined, Triton answering
            produce_events(prod, [_unique_row("warm", i, datetime.now(UTC)) for i in range(5)])
        watch.wait_for("warm", 5)
        version = sorted(watch.versions)[-1]
        bulk = subprocess.Popen(
            [*BACKFILL, version],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while _backfill_pairs(settings) == 0 and time.monotonic() < deadline:
            assert bulk.poll() is None, bulk.communicate()[0].decode()[-3000:]
            time.sleep(0.2)
        before = _backfill_pairs(settings)
        assert before > 0, "the backfill never started scoring"
        running = _live_windows(settings, watch, bulk.pid)
        during = _backfill_pairs(settings) - before
        from infra.worker_status import describe, read_statuses

        for status in read_statuses(settings):
            if status.name.startswith("labeler"):
                print(describe(status))
        assert bulk.poll() is None, "the backfill ended before the live traffic did"
        bulk.send_signal(signal.SIGTERM)
        out = bulk.communicate(timeout=120)[0].decode()
        assert bulk.returncode == 0, out[-3000:]
        stats = json.loads(out.strip().splitlines()[-1])
        assert stats["complete"] is False and stats["labeled"] < HISTORY_ROWS
        visible = _visible_lags(settings, set(running))
    finally:
        watch.close()
        for proc in (bulk, live, sink):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()

    def p95(lags: dict[str, float], competing: bool) -> float:
        return float(np.percentile([v for i, v in lags.items() if running[i] == competing], 95))

    acked = {i: watch.lags[i] for i in running}
    p95_alone, p95_shared = p95(visible, False), p95(visible, True)
    print(
        f"live p95 freshness to Iceberg (sink {SINK_BATCH_S} s batches): backfill paused "
        f"{p95_alone:.3f} s, running {p95_shared:.3f} s; to the broker's ack: paused "
        f"{p95(acked, False):.3f} s, running {p95(acked, True):.3f} s "
        f"({len(running) // 2} rows each); {during:.0f} backfill pairs scored"
    )
    # The backfill competed for the teacher while it ran...
    assert during >= 50, f"only {during:.0f} backfill pairs scored during the live traffic"
    # ... and live labels still became visible at (nearly) the live-only freshness.
    assert p95_shared <= 1.5 * p95_alone, f"live p95 {p95_shared:.2f} s vs {p95_alone:.2f} s"


def test_the_live_labeler_measures_a_students_disagreement_on_served_embeddings(
    platform: Platform, teachers: dict[str, Path], tmp_path: Path
) -> None:
    """The drift signal end to end: Triton returns the teacher's embeddings, the labeler
    builds the student's inputs from them and the texts, and the per-language rate in its
    status file is the one the training featurizer and the in-process teacher give."""
    from infra.worker_status import read_statuses
    from serving.labeler.labeler import teacher_input
    from serving.student.features import BM25_FILE, Featurizer
    from serving.student.model import StudentConfig, train_student
    from serving.teacher.model import Teacher

    settings = platform.settings

    async def served() -> str:
        scorer = TritonScorer.from_settings(settings)
        try:
            return (await scorer.served())[0]
        finally:
            await scorer.close()

    version = asyncio.run(served())  # labeler-v1, or v2 after the roll test
    teacher_dir = teachers[version]
    # The served export runs eager torch in fp32: the student's features are those.
    featurizer = Featurizer.from_teacher(teacher_dir, runtime="torch", quantize="none")
    teacher = Teacher.load(teacher_dir)
    # Unique titles (no score-cache hits from other tests) and a language of their own.
    rows = [
        r.model_copy(update={"title": f"drift {TITLES[i % 4]} {i % 9}", "locale": "zz-ZZ"})
        for i, r in enumerate(enriched_rows(180, "drift"))
    ]
    texts = [teacher_input(r) for r in rows]
    queries = [r.query for r in rows]
    inputs = featurizer.inputs(queries, texts)
    probs = teacher.predict(queries, texts).probs
    student = train_student(
        inputs, 4, probs=probs, config=StudentConfig(hidden=[32], epochs=3), version="st-e2e"
    )
    student.manifest.teacher_version = version
    student.manifest.feature_versions = featurizer.versions()
    student.save(tmp_path / "student", bm25_file=teacher_dir / BM25_FILE)
    expected = float(np.mean(student.predict(inputs).label != probs.argmax(axis=1) + 1))

    drift_settings = settings.model_copy(
        update={
            "labeler": settings.labeler.model_copy(
                update={
                    "group_id": "labeler-drift",
                    "student_dir": tmp_path / "student",
                    "drift_window_rows": 1000,
                    "drift_min_rows": 10,
                    "drift_alert_rate": 0.99,
                }
            )
        }
    )
    with producer(settings) as prod:
        produce_events(prod, rows)
    label_until_idle(drift_settings)
    (status,) = [
        s
        for s in read_statuses(settings)
        if s.name == "labeler" and s.pid == os.getpid() and "student" in s.metrics
    ]
    section = status.metrics["student"]
    assert section["state"] == "on", section["reason"]
    assert section["version"] == "st-e2e" and section["teacher_version"] == version
    zz = section["lang"]["zz"]
    assert zz["rows"] == len(rows)
    # The same features as training, up to fp32 noise across the two processes.
    assert abs(zz["rate"] - expected) <= 0.03, (zz, expected)


def test_cache_survives_restart(tmp_path: Path) -> None:
    key = cache_key("Oak Desk ", "p1", input_hash("oak desk", "title: desk"), "v1")
    from serving.labeler.cache import CachedScore

    cache = ScoreCache(tmp_path / "c.sqlite", memory_items=1)
    cache.put_many([(key, CachedScore(probs=[0.5, 0.5], score=1.5, label_scale=2))])
    cache.close()
    again = ScoreCache(tmp_path / "c.sqlite", memory_items=1)
    assert again.get_many([key, "other"])[key].score == 1.5
    assert again.hit_rate == 0.5
    assert os.path.getsize(tmp_path / "c.sqlite") > 0


def test_the_labeler_and_a_backfill_share_one_cache_file(tmp_path: Path) -> None:
    from serving.labeler.cache import CachedScore

    key = cache_key("oak desk", "p1", input_hash("oak desk", "title: desk"), "v1")
    live = ScoreCache.in_state_dir(tmp_path, memory_items=1)
    live.put_many([(key, CachedScore(probs=[0.5, 0.5], score=1.5, label_scale=2))])
    live.close()
    backfill = ScoreCache.in_state_dir(tmp_path)
    assert backfill.get_many([key])[key].score == 1.5
    assert (tmp_path / "labeler" / "score-cache.sqlite").is_file()
    backfill.close()
