"""The quality gate's checks on hand-made batches, on a real (SQLite) Iceberg catalog.

No broker here: these call the gate the way the sink does, one batch at a time. The
end-to-end path (broker -> sink -> gate -> tables, topic and webhook) is in
tests/test_quality_sink.py.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from infra.catalog import ensure_all_tables, open_catalog
from infra.config import Settings
from quality.gate import QualityGate
from quality.models import GateOutcome
from quality.samples import MARKETS, changed, enriched_impressions, labels
from quality.suites import CheckConfigError
from schemas.base import Event
from streams.arrow_rows import SourcePosition, to_arrow
from tests.conftest import make_settings

ENRICHED = "impressions_enriched"
LABELS = "labels"
_offsets = itertools.count(0, 10_000)


@pytest.fixture(scope="module")
def catalog_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = make_settings(tmp_path_factory.mktemp("dq") / "state")
    ensure_all_tables(settings)
    yield settings


@pytest.fixture(scope="module")
def catalog(catalog_settings: Settings) -> Catalog:
    return open_catalog(catalog_settings)


def gate_for(settings: Settings, catalog: Catalog, **quality: object) -> QualityGate:
    tuned = settings.model_copy(deep=True)
    for key, value in quality.items():
        setattr(tuned.quality, key, value)
    return QualityGate(tuned, catalog, clock=FakeClock())


class FakeClock:
    """Seconds for the alert rate limit, advanced by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def batch(
    catalog: Catalog, table: str, events: Sequence[Event], ingested: datetime | None = None
) -> pa.Table:
    """The Arrow table the sink would build for these events (4 partitions)."""
    first = next(_offsets)
    positions = [SourcePosition(i % 4, first + i) for i in range(len(events))]
    target = catalog.load_table(f"freshlabel.{table}")
    return to_arrow(target, events, positions, f"{table}@{first}", ingested or datetime.now(UTC))


def now() -> datetime:
    return datetime.now(UTC)


def failed_checks(outcome: GateOutcome) -> set[str]:
    return {r.check for r in outcome.results if not r.passed}


def firing(outcome: GateOutcome) -> set[str]:
    return {a.check for a in outcome.alerts if a.status == "firing"}


def warm(gate: QualityGate, catalog: Catalog, table: str, batches: int = 3, n: int = 200) -> None:
    """Clean batches that fill the reference window."""
    for seed in range(batches):
        events = (
            enriched_impressions(n, now(), seed=seed)
            if table == ENRICHED
            else labels(n, now(), seed=seed)
        )
        outcome = gate.check(table, batch(catalog, table, events), "warm")
        assert not failed_checks(outcome) and not outcome.alerts


def test_clean_batches_pass_and_raise_nothing(catalog_settings: Settings, catalog: Catalog) -> None:
    gate = gate_for(catalog_settings, catalog)
    for table in (ENRICHED, LABELS):
        warm(gate, catalog, table)
        events = (
            enriched_impressions(150, now(), seed=9)
            if table == ENRICHED
            else labels(150, now(), seed=9)
        )
        outcome = gate.check(table, batch(catalog, table, events), "clean")
        assert failed_checks(outcome) == set() and outcome.alerts == []
        assert outcome.passed.num_rows == 150 and outcome.quarantined.num_rows == 0
        # With the reference window full, the distribution checks were judged, not skipped.
        judged = {r.check for r in outcome.results if not r.skipped}
        assert "volume" in judged
        assert ("query_language_mix" if table == ENRICHED else "label_distribution") in judged


LATER = timedelta(hours=2)
ROW_FAILURES = [
    ("required_keys", "critical", {"impression_id": ""}),
    ("country_known", "critical", {"country": "XX"}),
    ("locale_known", "critical", {"locale": "xx-XX"}),
    ("query_length", "critical", {"query": "q" * 600}),
    ("event_time_not_future", "critical", {"event_time": "future"}),
    ("event_time_retention", "critical", {"event_time": "ancient"}),
    ("text_length", "warning", {"description": "d" * 9000}),
]


@pytest.mark.parametrize(("check", "severity", "fields"), ROW_FAILURES, ids=lambda v: str(v)[:24])
def test_each_impression_row_failure_is_caught(
    catalog_settings: Settings, catalog: Catalog, check: str, severity: str, fields: dict
) -> None:
    gate = gate_for(catalog_settings, catalog)
    events = enriched_impressions(60, now(), seed=1)
    if fields.get("event_time") == "future":
        fields = {"event_time": now() + LATER}
    elif fields.get("event_time") == "ancient":
        fields = {"event_time": now() - timedelta(days=120)}
    events[7] = changed(events[7], **fields)
    outcome = gate.check(ENRICHED, batch(catalog, ENRICHED, events), "b")

    assert failed_checks(outcome) == {check}
    assert firing(outcome) == {check}
    (alert,) = outcome.alerts
    assert alert.failed_rows == 1 and alert.severity == severity
    assert alert.sample_rows[0]["impression_id"] == events[7].impression_id
    if severity == "critical":
        assert outcome.quarantined.num_rows == 1
        (row,) = outcome.quarantined.to_pylist()
        assert row["impression_id"] == events[7].impression_id
        assert check in row["failed_checks"]
        assert outcome.passed.num_rows == 59
        assert "quarantined in impressions_enriched_quarantine" in alert.summary
    else:
        assert outcome.quarantined.num_rows == 0 and outcome.passed.num_rows == 60
        assert "rows committed" in alert.summary


def _broken(event, kind: str):  # type: ignore[no-untyped-def]
    if kind == "out_of_range":
        return changed(event, probs=[0.6, 0.6, -0.2, 0.0], score=0.0)
    if kind == "not_normalised":
        probs = [0.5, 0.5, 0.5, 0.2]
        return changed(event, probs=probs, score=sum(k * p for k, p in enumerate(probs)))
    if kind == "scale":
        return changed(event, label_scale=5)
    if kind == "teacher":
        return changed(event, teacher_version="")
    return changed(event, score=event.score + 0.5)


LABEL_FAILURES = [
    ("out_of_range", "probs_in_range"),
    ("not_normalised", "probs_sum_to_one"),
    ("scale", "label_scale_matches"),
    ("teacher", "teacher_version_present"),
    ("score", "score_consistent"),
]


@pytest.mark.parametrize(("kind", "check"), LABEL_FAILURES)
def test_each_broken_teacher_output_is_quarantined(
    catalog_settings: Settings, catalog: Catalog, kind: str, check: str
) -> None:
    gate = gate_for(catalog_settings, catalog)
    events = labels(40, now(), seed=2)
    events[3] = _broken(events[3], kind)
    outcome = gate.check(LABELS, batch(catalog, LABELS, events), "b")
    assert check in failed_checks(outcome)
    assert outcome.quarantined.num_rows == 1 and outcome.passed.num_rows == 39
    (row,) = outcome.quarantined.to_pylist()
    assert row["impression_id"] == events[3].impression_id and check in row["failed_checks"]
    assert check in firing(outcome)


def test_missing_captions_alert_but_commit(catalog_settings: Settings, catalog: Catalog) -> None:
    gate = gate_for(catalog_settings, catalog)
    events = [changed(e, caption=None) for e in enriched_impressions(80, now(), seed=3)]
    outcome = gate.check(ENRICHED, batch(catalog, ENRICHED, events), "b")
    assert failed_checks(outcome) == {"caption_coverage"}
    (alert,) = outcome.alerts
    assert alert.observed_value == 0.0 and alert.severity == "warning"
    assert outcome.passed.num_rows == 80 and outcome.quarantined.num_rows == 0


def test_critical_batch_check_quarantines_the_batch(
    catalog_settings: Settings, catalog: Catalog
) -> None:
    tuned = catalog_settings.model_copy(deep=True)
    tuned.quality.tables[ENRICHED]["caption_coverage"].severity = "critical"
    gate = QualityGate(tuned, catalog)
    events = [changed(e, caption=None) for e in enriched_impressions(30, now(), seed=3)]
    outcome = gate.check(ENRICHED, batch(catalog, ENRICHED, events), "b")
    assert outcome.passed.num_rows == 0 and outcome.quarantined.num_rows == 30
    assert all(r == ["caption_coverage"] for r in outcome.quarantined["failed_checks"].to_pylist())


def test_stale_events_break_the_freshness_sla(catalog_settings: Settings, catalog: Catalog) -> None:
    gate = gate_for(catalog_settings, catalog)
    events = enriched_impressions(50, now() - timedelta(hours=3), seed=4)
    outcome = gate.check(ENRICHED, batch(catalog, ENRICHED, events), "b")
    assert failed_checks(outcome) == {"freshness_lag"}
    (result,) = [r for r in outcome.results if r.check == "freshness_lag"]
    assert result.observed_value is not None and result.observed_value > 3 * 3600


def test_sudden_shifts_against_the_reference_window(
    catalog_settings: Settings, catalog: Catalog
) -> None:
    gate = gate_for(catalog_settings, catalog)
    warm(gate, catalog, ENRICHED)
    warm(gate, catalog, LABELS)
    only_japan = [m for m in MARKETS if m[0] == "JP"]
    events = enriched_impressions(200, now(), seed=5, markets=only_japan)
    assert failed_checks(gate.check(ENRICHED, batch(catalog, ENRICHED, events), "b")) == {
        "query_language_mix"
    }
    skewed = labels(200, now(), seed=5, weights=(0.0, 0.0, 0.05, 0.95))
    outcome = gate.check(LABELS, batch(catalog, LABELS, skewed), "b")
    assert failed_checks(outcome) == {"label_distribution"}
    assert outcome.passed.num_rows == 200  # a warning: rows commit


def test_volume_drop_and_spike(catalog_settings: Settings, catalog: Catalog) -> None:
    gate = gate_for(catalog_settings, catalog)
    warm(gate, catalog, ENRICHED)  # 200 rows per 600 s: 20 per minute
    drop = enriched_impressions(8, now(), seed=6)  # < 1 per minute
    assert "volume" in failed_checks(gate.check(ENRICHED, batch(catalog, ENRICHED, drop), "b"))
    spike = enriched_impressions(3000, now(), span_s=60, seed=7)  # 3000 in one minute
    outcome = gate.check(ENRICHED, batch(catalog, ENRICHED, spike), "b")
    assert failed_checks(outcome) == {"volume"}
    assert outcome.alerts == []  # still the same incident: grouped with the drop's alert
    (result,) = [r for r in outcome.results if r.check == "volume"]
    assert result.observed_value is not None and result.observed_value > 5


def test_gradual_seasonal_shift_stays_quiet_but_a_sudden_one_alerts(
    catalog_settings: Settings, catalog: Catalog
) -> None:
    """The language mix drifts from 90% English to 90% Japanese over 20 batches (each a
    small step from the last, as a season would): no alert. Then German jumps in."""
    gate = gate_for(catalog_settings, catalog, reference_batches=6)
    en, ja = MARKETS[0], MARKETS[4]
    for step in range(20):
        share = 0.1 + 0.8 * step / 19
        markets = [(*en[:3], 1 - share), (*ja[:3], share)]
        events = enriched_impressions(200, now(), seed=100 + step, markets=markets)
        outcome = gate.check(ENRICHED, batch(catalog, ENRICHED, events), "season")
        assert outcome.alerts == [], (step, [a.summary for a in outcome.alerts])
    german = [m for m in MARKETS if m[0] == "DE"]
    events = enriched_impressions(200, now(), seed=200, markets=german)
    outcome = gate.check(ENRICHED, batch(catalog, ENRICHED, events), "sudden")
    assert firing(outcome) == {"query_language_mix"}


def test_repeats_are_grouped_rate_limited_and_recovery_is_sent(
    catalog_settings: Settings, catalog: Catalog
) -> None:
    gate = gate_for(catalog_settings, catalog, alert_repeat_s=600.0)
    clock = gate.alerts.clock
    assert isinstance(clock, FakeClock)

    def bad() -> GateOutcome:
        events = enriched_impressions(30, now(), seed=8)
        events[0] = changed(events[0], country="XX")
        return gate.check(ENRICHED, batch(catalog, ENRICHED, events), "b")

    first = bad()
    assert [(a.status, a.repeats) for a in first.alerts] == [("firing", 1)]
    for _ in range(3):
        clock.now += 60
        assert bad().alerts == []  # grouped: within alert_repeat_s
    clock.now += 600
    again = bad().alerts
    assert [(a.status, a.check, a.repeats) for a in again] == [("firing", "country_known", 4)]
    assert "failed 4 time(s) since the last alert" in again[0].summary
    clock.now += 60
    assert bad().alerts == []
    clean = gate.check(
        ENRICHED, batch(catalog, ENRICHED, enriched_impressions(30, now(), seed=8)), "ok"
    )
    (recovery,) = clean.alerts
    assert (recovery.status, recovery.check, recovery.repeats) == ("resolved", "country_known", 1)
    assert "passes again" in recovery.summary
    clean_again = enriched_impressions(30, now(), seed=9)
    assert gate.check(ENRICHED, batch(catalog, ENRICHED, clean_again), "ok").alerts == []


def test_persistence_is_idempotent_and_restores_the_window(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "state")
    catalog = open_catalog(settings)
    ensure_all_tables(settings, catalog)
    gate = QualityGate(settings, catalog)
    for seed in range(3):
        rows = batch(catalog, LABELS, labels(50, now(), seed=seed))
        gate.persist(gate.check(LABELS, rows, f"warm-{seed}"))

    events = labels(50, now(), seed=11)
    events[5] = _broken(events[5], "not_normalised")
    rows = batch(catalog, LABELS, events)
    # A sink that crashed after the gate wrote, then re-read the same records: a new
    # process, a new gate, the same rows.
    crashed = QualityGate(settings, catalog)
    crashed.persist(crashed.check(LABELS, rows, "attempt-1"))
    replay = QualityGate(settings, catalog)
    outcome = replay.guard(LABELS, rows, "attempt-2")
    assert outcome.quarantined.num_rows == 1

    quarantine = catalog.load_table("freshlabel.labels_quarantine").scan().to_arrow()
    assert quarantine["impression_id"].to_pylist() == [events[5].impression_id]
    assert quarantine["failed_checks"].to_pylist() == [["probs_sum_to_one"]]
    results = catalog.load_table("freshlabel.dq_results").scan().to_arrow().to_pylist()
    mine = [r for r in results if r["batch_key"] == outcome.batch_key]
    assert {r["batch_id"] for r in mine} == {"attempt-2"}
    assert len(mine) == len(outcome.results)
    # The new gate rebuilt its reference window from dq_results: judged at once.
    judged = {r.check for r in outcome.results if not r.skipped}
    assert {"label_distribution", "volume"} <= judged
    # ... and knew probs_sum_to_one was already firing: no second alert for it.
    assert "probs_sum_to_one" not in firing(outcome)


def test_rules_come_from_config(monkeypatch: pytest.MonkeyPatch, catalog: Catalog) -> None:
    monkeypatch.setenv("FRESHLABEL_QUALITY__TABLES__LABELS__PROBS_SUM_TO_ONE__MAX", "0.9")
    settings = Settings()
    rules = settings.quality.tables[LABELS]
    assert rules["probs_sum_to_one"].max == 0.9
    assert rules["probs_sum_to_one"].severity == "critical"  # the rest of the rule kept
    assert rules["label_distribution"].max == 0.25  # and the other checks
    events = labels(20, now(), seed=2)
    events[0] = _broken(events[0], "not_normalised")  # sum 1.7: within 0.9
    outcome = QualityGate(settings, catalog).check(LABELS, batch(catalog, LABELS, events), "b")
    assert "probs_sum_to_one" not in failed_checks(outcome)

    settings.quality.tables[LABELS]["no_such_check"] = rules["volume"]
    with pytest.raises(CheckConfigError, match="unknown data-quality check 'no_such_check'"):
        QualityGate(settings, catalog).check(LABELS, batch(catalog, LABELS, events), "b")


def test_tables_without_rules_pass_through(catalog_settings: Settings, catalog: Catalog) -> None:
    gate = gate_for(catalog_settings, catalog)
    assert not gate.applies_to("pin_captions")
    rows = batch(catalog, LABELS, labels(5, now()))
    outcome = gate_for(catalog_settings, catalog, enabled=False).check(LABELS, rows, "b")
    assert outcome.passed is rows and outcome.results == []
