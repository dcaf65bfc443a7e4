"""The gate inside the real Iceberg sink: real broker, real catalog, a local webhook.

Each failure kind is produced to the topic and run through `IcebergSink`; we look for
the alert on the `dq.alerts` topic and on the webhook, the offending rows in the
quarantine table, and every other row committed with every offset accounted for.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from infra.catalog import open_catalog
from infra.config import Settings
from infra.kafka_io import producer, read_all
from quality.gate import QualityGate
from quality.samples import changed, enriched_impressions, labels
from schemas import RelevanceLabel
from schemas.base import Event
from streams.arrow_rows import SourcePosition, to_arrow
from streams.iceberg_sink import IcebergSink, SinkStats
from streams.offsets import committed_offsets
from streams.produce import produce_events
from tests.conftest import freshlabel
from tests.quality_webhook import WebhookReceiver

pytestmark = pytest.mark.slow

ENRICHED_TOPIC, ENRICHED = "impressions.enriched", "impressions_enriched"


@pytest.fixture(scope="module")
def hook() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def dq_settings(running_stack: Settings, hook: WebhookReceiver) -> Settings:
    tuned = running_stack.model_copy(deep=True)
    tuned.quality.webhook_url = hook.url
    tuned.quality.webhook_backoff_s = 0.05
    return tuned


def sink(settings: Settings, topic: str, table: str, events: Sequence[Event]) -> SinkStats:
    with producer(settings) as prod:
        produce_events(prod, events)
    return IcebergSink(settings, topic, table, batch_seconds=600).run(idle_timeout_s=2.0)


def alerts(settings: Settings) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(r.value) for r in read_all(settings, settings.quality.alerts_topic, 1.5)]


def scan(catalog: Catalog, table: str) -> list[dict]:  # type: ignore[type-arg]
    return catalog.load_table(f"freshlabel.{table}").scan().to_arrow().to_pylist()


def test_a_clean_batch_raises_nothing(dq_settings: Settings, hook: WebhookReceiver) -> None:
    stats = sink(dq_settings, ENRICHED_TOPIC, ENRICHED, enriched_impressions(60, datetime.now(UTC)))
    assert stats.rows_committed == 60 and stats.rows_quarantined == 0
    assert alerts(dq_settings) == [] and hook.bodies == []
    catalog = open_catalog(dq_settings)
    assert scan(catalog, "impressions_enriched_quarantine") == []
    results = scan(catalog, "dq_results")
    assert results and all(r["passed"] for r in results)


def test_each_impression_failure_is_alerted_quarantined_and_the_rest_committed(
    dq_settings: Settings, hook: WebhookReceiver
) -> None:
    now = datetime.now(UTC)
    clean = enriched_impressions(60, now, seed=1, prefix="ok")
    template = enriched_impressions(7, now, seed=2, prefix="bad")
    bad = {
        "required_keys": changed(template[0], user_id=""),
        "country_known": changed(template[1], country="XX"),
        "locale_known": changed(template[2], locale="xx-XX"),
        "query_length": changed(template[3], query="q" * 600),
        "event_time_not_future": changed(template[4], event_time=now + timedelta(hours=2)),
        "event_time_retention": changed(template[5], event_time=now - timedelta(days=200)),
        "text_length": changed(template[6], description="d" * 9000),  # a warning
    }
    stats = sink(dq_settings, ENRICHED_TOPIC, ENRICHED, [*clean, *bad.values()])
    # An empty id and a time hours ahead are refused earlier, by the shared decode step
    # (streams/decode.py): dead letters with their reason, never seen by the gate.
    refused_at_decode = {"required_keys", "event_time_not_future"}
    assert stats.dead_letters_by_reason == {"invalid_value": 1, "event_time_out_of_range": 1}
    for check in refused_at_decode:
        bad.pop(check)
    assert stats.rows_committed == 61 and stats.rows_quarantined == 4
    assert stats.records_consumed == 61 + 4 + 2

    catalog = open_catalog(dq_settings)
    quarantined = {
        r["impression_id"]: r["failed_checks"] for r in scan(catalog, f"{ENRICHED}_quarantine")
    }
    expected = {e.impression_id: [check] for check, e in bad.items() if check != "text_length"}
    assert quarantined == expected
    committed = {r["impression_id"] for r in scan(catalog, ENRICHED)}
    assert {e.impression_id for e in clean} <= committed
    assert bad["text_length"].impression_id in committed
    assert not committed & set(expected)
    # Quarantined rows' offsets count as consumed: every record of the topic is accounted.
    table = catalog.load_table(f"freshlabel.{ENRICHED}")
    assert sum(committed_offsets(table, ENRICHED_TOPIC).values()) == 60 + 60 + 7

    on_topic = [a for a in alerts(dq_settings) if a["status"] == "firing"]
    assert Counter(a["check"] for a in on_topic) == Counter(list(bad))
    by_check = {a["check"]: a for a in on_topic}
    assert by_check["country_known"]["sample_rows"][0]["country"] == "XX"
    assert by_check["country_known"]["quarantine_table"] == "impressions_enriched_quarantine"
    assert by_check["text_length"]["severity"] == "warning"
    texts = hook.texts()
    assert len(texts) == len(bad)
    for check in bad:
        assert any(f"{ENRICHED}.{check}" in t for t in texts), check


def test_broken_teacher_output_and_a_replay_after_a_crash(
    dq_settings: Settings, hook: WebhookReceiver
) -> None:
    now = datetime.now(UTC)
    good = labels(40, now, seed=3, prefix="lab")
    broken = labels(4, now, seed=4, prefix="broken")
    probs = [0.6, 0.6, 0.3, 0.2]
    bad = {
        "probs_sum_to_one": changed(
            broken[0], probs=probs, score=sum(k * p for k, p in enumerate(probs))
        ),
        "label_scale_matches": changed(broken[1], label_scale=5),
        # (An empty teacher_version is refused by the decode step before the gate sees it.)
        "score_consistent": changed(broken[3], score=broken[3].score + 1.0),
    }
    with producer(dq_settings) as prod:
        produce_events(prod, [*good, *bad.values()])

    # A sink that crashed after its gate ran: the gate published and wrote the quarantine,
    # the table never got the commit. Same records, real Kafka positions.
    records = sorted(read_all(dq_settings, "labels", 1.5), key=lambda r: (r.partition, r.offset))
    events = [RelevanceLabel.model_validate_json(r.value) for r in records]
    catalog = open_catalog(dq_settings)
    rows = to_arrow(
        catalog.load_table("freshlabel.labels"),
        events,
        [SourcePosition(r.partition, r.offset) for r in records],
        "crashed-attempt",
        datetime.now(UTC),
    )
    crashed = QualityGate(dq_settings, catalog)
    crashed.guard("labels", rows, "crashed-attempt")
    crashed.close()
    assert len(scan(catalog, "labels_quarantine")) == 3

    stats = IcebergSink(dq_settings, "labels", "labels", batch_seconds=600).run(idle_timeout_s=2.0)
    assert stats.rows_committed == 40 and stats.rows_quarantined == 3
    quarantined = {
        r["impression_id"]: r["failed_checks"] for r in scan(catalog, "labels_quarantine")
    }
    assert quarantined == {e.impression_id: [check] for check, e in bad.items()}  # no doubles
    assert {r["impression_id"] for r in scan(catalog, "labels")} == {e.impression_id for e in good}

    on_topic = [a for a in alerts(dq_settings) if a["table"] == "labels"]
    # One alert per check: the replay knew from dq_results that they had gone out.
    assert Counter(a["check"] for a in on_topic) == Counter(list(bad))
    results = [r for r in scan(catalog, "dq_results") if r["table_name"] == "labels"]
    assert {r["batch_id"] for r in results} == {stats_batch_id(results)}


def stats_batch_id(results: list[dict]) -> str:  # type: ignore[type-arg]
    """The sink's batch id: the crashed attempt's results were replaced, not kept."""
    ids = {r["batch_id"] for r in results}
    assert "crashed-attempt" not in ids
    (only,) = ids
    return str(only)


def test_report_shows_alerts_and_quarantined_rows(dq_settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "report"
    done = freshlabel(dq_settings, "dq", "report", "--since", "1h", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "quarantined rows: 7 (impressions_enriched_quarantine 4, labels_quarantine 3)" in (
        done.stdout
    )
    assert "impressions_enriched.country_known" in done.stdout
    page = (out / "index.html").read_text()
    assert "Quarantined rows: 7" in page and "probs_sum_to_one" in page
    for image in ("pass_rate.png", "label_distribution.png", "coverage.png", "lag.png"):
        assert (out / image).stat().st_size > 1000 and f'src="{image}"' in page
