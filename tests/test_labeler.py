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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from infra import stack, triton
from infra.catalog import open_catalog
from infra.config import GeneratorSettings, Settings
from infra.process import ServiceRecord, free_port, port_free, stop
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
from streams.kafka_io import producer, read_all
from streams.produce import produce_events
from tests.conftest import ROOT, freshlabel, make_settings
from tests.teacher_fixtures import QUERIES, labeler_env, world_sample

TINY = TrainConfig(epochs=1, max_steps=3, max_length=48, batch_size=16, val_fraction=0.25)
T0 = datetime(2026, 10, 1, tzinfo=UTC)
TITLES = ["modern oak desk", "vintage ceramic vase", "wool blanket set", "kitchen towel"]


def enriched_rows(n: int, prefix: str) -> list[EnrichedImpression]:
    """Few distinct (query, pin, text) combinations, as in real search traffic."""
    return [
        EnrichedImpression(
            impression_id=f"{prefix}-{i}",
            request_id=f"r{i // 5}",
            user_id=f"u{i % 13}",
            query=QUERIES[i % 4],
            pin_id=f"pin-{i % 6}",
            position=i % 5 + 1,
            country="US",
            locale="en-US",
            event_time=T0 + timedelta(minutes=i),
            title=TITLES[i % 6 % 4],
            caption="photo of a desk" if i % 6 == 0 else None,
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("teachers")
    data = load_pairs(world_sample(root / "world.parquet"), "world")
    out = {}
    for version in ("labeler-v1", "labeler-v2"):
        out[version] = root / version
        train_teacher(data, out[version], TINY, version=version)
    return out


@dataclass
class Platform:
    settings: Settings
    triton: ServiceRecord  # replaced when a test restarts the server


@pytest.fixture(scope="module")
def platform(
    tmp_path_factory: pytest.TempPathFactory, teachers: dict[str, Path]
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("labeler")
    repo = root / "repo"
    export_teacher(teachers["labeler-v1"], repo, 1, ExportOptions())
    settings = make_settings(
        root / "state",
        triton={
            "repository": repo,
            "repository_poll_s": 1,
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "retries": 1,
        },
        labeler={"batch_rows": 200, "retry_initial_s": 0.5, "retry_max_s": 2.0},
    )
    # A configured repository makes `up` start Triton too (and wait until it is ready).
    state = stack.up(settings)
    running = Platform(settings, next(s for s in state.services if s.name == triton.SERVICE))
    try:
        yield running
    finally:
        stop(running.triton)  # a test may have replaced the one `up` started
        stack.down(settings)


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
        [sys.executable, "-m", "infra.cli", "label", "run", "--idle-timeout", "40"],
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
    command = [sys.executable, "-m", "infra.cli", "label", "run", "--idle-timeout", "15"]
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

    async def label_until_idle() -> None:
        scorer = TritonScorer.from_settings(settings)
        try:
            await Labeler(settings, scorer).run(idle_timeout_s=3.0)
        finally:
            await scorer.close()

    with producer(settings) as prod:
        produce_events(prod, rows[:120])
    asyncio.run(label_until_idle())
    # Roll: export version 2 into the served repository; Triton polls and swaps it in.
    export_teacher(teachers["labeler-v2"], settings.triton.repository, 2, ExportOptions())
    deadline = time.monotonic() + 120
    while triton.served_versions(settings) != ["2"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert triton.served_versions(settings) == ["2"]
    with producer(settings) as prod:
        produce_events(prod, rows[120:])
    asyncio.run(label_until_idle())

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
            [
                sys.executable,
                "-m",
                "infra.cli",
                "label",
                "backfill",
                "--teacher-version",
                "labeler-v2",
            ],
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
