"""Generator -> broker -> Flink -> sink -> Iceberg on the real stack, checked against truth.

A seeded world of 20,000 impressions must end as exactly one enriched row per impression,
every feature equal to the generator's truth as of that impression's time.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from infra import stack
from infra.catalog import open_catalog
from streams.enrich.clock import advance_event_time
from streams.enrich.operations import deploy
from streams.enrich.operations import stop as stop_job
from streams.enrich.reference import pit_violations
from streams.generator.run import run as generate
from streams.generator.truth import load_truth
from streams.iceberg_sink import IcebergSink
from tests.conftest import make_settings

TOPICS = ("impressions", "pin_content", "pin_captions", "board_saves", "engagements")


@pytest.mark.slow
def test_seeded_world_enriched_exactly_once_and_as_of_its_time(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "state",
        flink={"enabled": True, "rest_port": 0, "jobmanager_rpc_port": 0},
        generator={"seed": 5, "impressions": 20_000, "sim_days": 21},
    )
    from infra.process import free_port

    settings.flink.rest_port = free_port(below=55000)
    settings.flink.jobmanager_rpc_port = free_port(below=55000)
    settings.generator.truth_dir = settings.state_dir / "world"
    stack.up(settings)
    try:
        deploy(settings)
        report = generate(settings, kafka=True, truth=True)
        impressions = report.counts["impressions"]
        assert impressions >= 20_000
        g = settings.generator
        advance_event_time(settings, g.start + timedelta(days=g.sim_days, hours=1))
        sink = IcebergSink(
            settings, "impressions.enriched", "impressions_enriched", batch_seconds=10
        )
        stats = sink.run(idle_timeout_s=30.0)
        stop_job(settings, savepoint=False)
    finally:
        stack.down(settings)

    table = open_catalog(settings).load_table("freshlabel.impressions_enriched")
    rows = table.scan().to_arrow()
    ids = rows.column("impression_id").to_pylist()
    truth = load_truth(settings.generator.truth_dir)
    expected_ids = set(truth.events("impressions").column("impression_id").to_pylist())
    assert len(ids) == len(set(ids)), "duplicate enriched rows"
    assert set(ids) == expected_ids, (
        f"{len(expected_ids - set(ids))} impressions missing, quarantined "
        f"{stats.rows_quarantined}, dead letters {stats.dead_letters}"
    )
    events = {t: truth.events(t) for t in TOPICS}
    violations = pit_violations(rows.to_pylist(), events, settings.flink)
    assert violations == [], violations[:10]
    # the features are really there, not all null
    assert sum(r is not None for r in rows.column("caption").to_pylist()) > len(ids) // 4
    assert sum(r is not None for r in rows.column("top_queries").to_pylist()) > len(ids) // 10
