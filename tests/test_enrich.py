"""The enrichment job on the real broker and a real Flink cluster, against the reference.

A hand-built scenario (three pins over four days) is produced in event-time order; the job's
output must match the Python reference (streams/enrich/reference.py) and a few hand-computed
values, carry every impression exactly once, dead-letter late records, and survive a stop
with savepoint and a redeploy from it without loss or duplicates.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from infra import stack
from infra.config import Settings
from infra.kafka_io import producer, reader_from_start
from infra.process import free_port, is_running
from schemas import BoardSave, Engagement, Event, Impression, PinCaption, PinContent
from schemas.topics import model_for_topic
from streams.dlq import DeadLetter, Reason
from streams.enrich import operations
from streams.enrich.clock import advance_event_time, mark_value
from streams.enrich.reference import LateVersion, expected, late_versions, pit_violations
from streams.enrich.sql import LATE_VERSION_TOPICS, SOURCES, SqlSettingsError, interval, render
from streams.produce import produce_events
from tests.conftest import freshlabel, make_settings, settings_env, stack_running, starts_servers
from tests.helpers import impression_fields

T0 = datetime(2026, 11, 2, tzinfo=UTC)
H = timedelta(hours=1)
MS = timedelta(milliseconds=1)
ENRICHED = "impressions.enriched"

# Small windows (2 days, sliding by 1) so four days exercise open, closed and expired ones;
# a 1 s hold so equal timestamps on different topics are never late.
FLINK_TEST_SETTINGS: dict[str, Any] = {
    "watermark_delay_s": 1.0,
    "allowed_lateness_s": 0.0,
    "checkpoint_interval_s": 2.0,
    "top_queries_window_days": 2,
    "top_queries_slide_hours": 24,
    "top_queries_k": 3,
    "top_boards_window_days": 2,
    "top_boards_slide_hours": 24,
    "top_boards_k": 3,
}


def _imp(iid: str, pin: str, at: datetime) -> Impression:
    ids = {"request_id": f"req-{iid}", "user_id": "u-1", "pin_id": pin}
    return Impression(**impression_fields(iid, at, query="knit sweater", **ids))


def _saves(pin: str, title: str, n: int, at: datetime) -> list[Event]:
    return [
        BoardSave(
            pin_id=pin,
            board_id=f"b-{title}-{i}",
            board_title=title,
            user_id=f"u-{i}",
            event_time=at + i * timedelta(minutes=1),
        )
        for i in range(n)
    ]


def _engagements(pin: str, query: str, n: int, at: datetime) -> list[Event]:
    return [
        Engagement(
            impression_id=f"eng-{pin}-{query}-{i}",
            query=query,
            pin_id=pin,
            action="click",
            event_time=at + i * timedelta(minutes=1),
        )
        for i in range(n)
    ]


def scenario() -> list[Event]:
    """p-a changes content, caption, boards and queries over four days; p-b has no features;
    p-c has more board titles than K (ties broken by title) and link fields."""
    events: list[Event] = [
        PinContent(pin_id="p-a", title="Knit sweater v1", description="wool", updated_at=T0 + H),
        PinCaption(
            pin_id="p-a", caption="a red sweater", captioner_version="v1", created_at=T0 + 2 * H
        ),
        *_saves("p-a", "Knits", 2, T0 + 3 * H),
        *_saves("p-a", "Winter", 1, T0 + 3 * H + 10 * timedelta(minutes=1)),
        *_engagements("p-a", "sweater", 2, T0 + 4 * H),
        *_engagements("p-a", "wool", 1, T0 + 4 * H + 10 * timedelta(minutes=1)),
        *_saves("p-a", "Winter", 2, T0 + 25 * H),
        *_saves("p-a", "Cozy", 1, T0 + 25 * H + 10 * timedelta(minutes=1)),
        PinCaption(
            pin_id="p-a",
            caption="a red knit sweater",
            captioner_version="v2",
            created_at=T0 + 26 * H,
        ),
        *_engagements("p-a", "cardigan", 1, T0 + 27 * H),
        PinContent(
            pin_id="p-a", title="Knit sweater v2", description="merino", updated_at=T0 + 30 * H
        ),
        PinContent(
            pin_id="p-c",
            title="Scarf",
            link_title="Shop scarves",
            link_description="Free shipping",
            updated_at=T0 + H,
        ),
    ]
    for title, n in (("t-a", 1), ("t-b", 3), ("t-c", 2), ("t-d", 2), ("t-e", 4)):
        events += _saves("p-c", title, n, T0 + 5 * H)
    events += [
        _imp("i-a1", "p-a", T0 + H / 2),
        _imp("i-a2", "p-a", T0 + H),
        _imp("i-a3", "p-a", T0 + 5 * H),
        _imp("i-a4", "p-a", T0 + 24 * H + 10 * timedelta(minutes=1)),
        _imp("i-a5", "p-a", T0 + 26 * H),
        _imp("i-a6", "p-a", T0 + 30 * H - MS),
        _imp("i-a10", "p-a", T0 + 48 * H - 2 * MS),
        _imp("i-a11", "p-a", T0 + 48 * H - MS),
        _imp("i-a7", "p-a", T0 + 49 * H),
        _imp("i-a8", "p-a", T0 + 73 * H),
        _imp("i-a9", "p-a", T0 + 97 * H),
        _imp("i-b1", "p-b", T0 + 2 * H),
        _imp("i-b2", "p-b", T0 + 50 * H),
        _imp("i-c1", "p-c", T0 + 25 * H),
    ]
    # Produced in event-time order, as a live system would see them.
    return sorted(events, key=lambda e: e.time)


def _settings_for_flink() -> Settings:
    from infra.config import FlinkSettings

    return Settings(flink=FlinkSettings(**FLINK_TEST_SETTINGS))


# -- the reference and the SQL, no cluster needed ---------------------------------------


def test_reference_matches_hand_computed_features() -> None:
    truth = expected(scenario(), _settings_for_flink().flink)
    a = {iid: truth[iid] for iid in truth if iid.startswith("i-a")}
    assert all(v is None for v in a["i-a1"].values())
    assert a["i-a2"]["title"] == "Knit sweater v1"  # a version at exactly t is visible
    assert a["i-a3"]["caption"] == "a red sweater" and a["i-a3"]["board_titles"] is None
    assert a["i-a4"]["board_titles"] == ["Knits", "Winter"]
    assert a["i-a4"]["top_queries"] == ["sweater", "wool"]
    assert a["i-a4"]["boards_updated_at"] == T0 + 24 * H
    assert a["i-a5"]["caption"] == "a red knit sweater"
    assert a["i-a6"]["title"] == "Knit sweater v1"  # v2 comes 1 ms later
    assert a["i-a10"]["board_titles"] == ["Knits", "Winter"]  # 2 ms before the window closes
    assert a["i-a11"]["board_titles"] == ["Winter", "Knits", "Cozy"]  # its last millisecond
    assert a["i-a7"]["top_queries"] == ["sweater", "cardigan", "wool"]
    assert a["i-a7"]["title"] == "Knit sweater v2"
    assert a["i-a8"]["board_titles"] == ["Winter", "Cozy"] and a["i-a8"]["top_queries"] == [
        "cardigan"
    ]
    assert a["i-a9"]["board_titles"] is None and a["i-a9"]["top_queries_updated_at"] is None
    assert all(v is None for v in truth["i-b2"].values())
    c1 = truth["i-c1"]
    assert c1["board_titles"] == ["t-e", "t-b", "t-c"]
    assert (c1["link_title"], c1["description"]) == ("Shop scarves", None)


def test_reference_orders_versions_by_event_time_not_arrival() -> None:
    newer = PinContent(pin_id="p", title="new", updated_at=T0 + 2 * H)
    older = PinContent(pin_id="p", title="old", updated_at=T0 + H)
    events = [newer, older, _imp("i", "p", T0 + 3 * H / 2), _imp("j", "p", T0 + 3 * H)]
    truth = expected(events)
    assert truth["i"]["title"] == "old" and truth["j"]["title"] == "new"


def test_reference_applies_a_late_version_only_after_the_watermark_it_met() -> None:
    v1 = PinCaption(pin_id="p", caption="v1", captioner_version="v1", created_at=T0)
    late = PinCaption(pin_id="p", caption="late", captioner_version="v1", created_at=T0 + H)
    newer = PinCaption(pin_id="q", caption="newer", captioner_version="v1", created_at=T0 + 2 * H)
    older = PinCaption(pin_id="q", caption="older", captioner_version="v1", created_at=T0 + H)
    seen = T0 + 3 * H  # the watermark both late versions met
    events: list[Event] = [
        v1,
        newer,
        _imp("before", "p", T0 + 2 * H),
        _imp("at", "p", seen),
        _imp("after", "p", seen + MS),
        _imp("q-after", "q", seen + H),
    ]
    letters = [
        DeadLetter.of(
            topic="pin_captions",
            partition=0,
            offset=n,
            key=b"p",
            value=caption.model_dump_json().encode(),
            reason=Reason.LATE_EVENT,
            detail=f"created_at {caption.created_at:%Y-%m-%dT%H:%M:%S.%fZ} is at or behind "
            f"the watermark {seen:%Y-%m-%dT%H:%M:%S.%fZ} (...): kept as a late version",
            consumer="flink:freshlabel-enrich",
        )
        for n, caption in enumerate((late, older))
    ]
    versions = late_versions(letters)
    assert versions == [LateVersion(late, seen), LateVersion(older, seen)]
    truth = expected(events, late=versions)
    captions = {iid: features["caption"] for iid, features in truth.items()}
    # Before and at the watermark: without it; after: with it, unless a newer one exists.
    assert captions == {"before": "v1", "at": "v1", "after": "late", "q-after": "newer"}


def test_pit_violations_names_each_wrong_field() -> None:
    events = scenario()
    truth = expected(events, _settings_for_flink().flink)
    row = {**_imp("i-a5", "p-a", T0 + 26 * H).model_dump(), **truth["i-a5"]}
    row["caption"] = "a red sweater"  # the older caption: what a lookup by arrival would give
    found = pit_violations([row], events, _settings_for_flink().flink)
    assert [(v.impression_id, v.field, v.expected, v.got) for v in found] == [
        ("i-a5", "caption", "a red knit sweater", "a red sweater")
    ]


@pytest.mark.parametrize("topic", sorted(SOURCES))
def test_a_clock_mark_carries_only_the_topics_event_time_and_is_no_valid_event(
    topic: str,
) -> None:
    tick = datetime(2026, 11, 3, 4, 5, 6, 789000, tzinfo=UTC)
    value = json.loads(mark_value(topic, tick))
    assert value == {SOURCES[topic]: "2026-11-03T04:05:06.789000Z"}
    # The job's validity filters ask for the ids every model requires: a mark has none, so
    # it moves its partition's watermark and is joined, counted and dead-lettered nowhere.
    with pytest.raises(ValidationError):
        model_for_topic(topic).model_validate(value)


def test_a_clock_mark_on_the_clock_topic_is_an_event_time() -> None:
    tick = datetime(2026, 11, 3, tzinfo=UTC)
    assert json.loads(mark_value("enrich.clock", tick)) == {
        "event_time": "2026-11-03T00:00:00.000000Z"
    }


def test_sql_renders_from_settings_and_refuses_misaligned_windows() -> None:
    assert interval(65.5) == "INTERVAL '0 00:01:05.500' DAY(3) TO SECOND(3)"
    job = render(Settings())
    assert len(job.inserts) == 6 and any("FOR SYSTEM_TIME AS OF i.rt" in s for s in job.inserts)
    assert (
        "'topic' = 'impressions;pin_content;pin_captions;board_saves;engagements;enrich.clock'"
        in (job.script())
    )
    with pytest.raises(SqlSettingsError, match="top_queries_slide_hours"):
        render(Settings(flink={"top_queries_window_days": 1, "top_queries_slide_hours": 7}))


def test_versions_have_no_age_bound_so_compacted_ones_still_apply() -> None:
    # A pin's only surviving content (compacted topic) is older than decode.max_age_days:
    # the reference and the job's rowtime both still apply it; impressions keep the bound.
    settings = Settings()
    at = T0 - timedelta(days=settings.decode.max_age_days + 30)
    events: list[Event] = [
        PinContent(pin_id="p", title="kept by compaction", updated_at=at),
        _imp("i", "p", T0),
    ]
    assert expected(events)["i"]["title"] == "kept by compaction"
    script = render(settings).script()
    rowtime = script[script.index("rt AS CASE") : script.index("arrival AS")]
    assert "kafka_topic IN ('pin_content', 'pin_captions')" in rowtime
    assert rowtime.count("CURRENT_TIMESTAMP - INTERVAL '400 ") == 1
    assert (
        "decode.max_age_days"
        not in script.split("INSERT INTO pin_content_dlq")[1].split("INSERT INTO pin_captions_dlq")[
            0
        ]
    )


def test_topics_keep_what_a_fresh_deploy_rebuilds_the_features_from() -> None:
    # The versioned topics are compacted; the windowed ones keep at least window + slide.
    settings = Settings()
    for topic in LATE_VERSION_TOPICS:
        assert settings.topic_config(topic)["cleanup.policy"] == "compact", topic
    f = settings.flink
    for topic, days, slide_hours in (
        ("board_saves", f.top_boards_window_days, f.top_boards_slide_hours),
        ("engagements", f.top_queries_window_days, f.top_queries_slide_hours),
    ):
        kept_ms = int(settings.topic_config(topic)["retention.ms"])
        assert kept_ms >= (days * 24 + slide_hours) * 3_600_000, topic


# -- the job on the real broker and Flink -------------------------------------------------


def _cli_env(settings: Settings) -> dict[str, str]:
    env = settings_env(settings)
    env["FRESHLABEL_FLINK"] = settings.flink.model_dump_json()
    return env


def cli(settings: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return freshlabel(settings, *args, timeout=timeout, env=_cli_env(settings))


def _flink_settings(state_dir: Path) -> Settings:
    return make_settings(
        state_dir,
        flink={
            **FLINK_TEST_SETTINGS,
            "enabled": True,
            "rest_port": free_port(),
            "jobmanager_rpc_port": free_port(),
        },
    )


def read_records(settings: Settings, topic: str, at_least: int, timeout_s: float) -> list[Any]:
    """Every record of `topic`, once at least `at_least` arrived (or the time is up), plus
    whatever else arrives in the 2 s after: enough to see duplicates."""
    with reader_from_start(settings, topic) as reader:
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        while time.monotonic() < (settle_until or deadline):
            for batch in reader.poll(timeout_ms=200).values():
                records.extend(batch)
            if settle_until is None and len(records) >= at_least:
                settle_until = time.monotonic() + 2.0
        return records


@pytest.fixture(scope="module")
@starts_servers
def flink_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A real stack with the Flink cluster, the job deployed, the scenario produced."""
    with stack_running(_flink_settings(tmp_path_factory.mktemp("enrich") / "state")) as settings:
        operations.deploy(settings)
        with producer(settings) as prod:
            produce_events(prod, scenario())
        advance_event_time(settings, max(e.time for e in scenario()))
        yield settings


def _enriched(records: list[Any]) -> dict[str, dict[str, Any]]:
    return {r.key.decode(): json.loads(r.value) for r in records}


@pytest.mark.slow
def test_every_impression_enriched_once_as_of_its_time(flink_stack: Settings) -> None:
    events = scenario()
    impressions = [e for e in events if isinstance(e, Impression)]
    records = read_records(flink_stack, ENRICHED, len(impressions), timeout_s=120)
    counts = Counter(r.key.decode() for r in records)
    assert counts == Counter(i.impression_id for i in impressions), "each exactly once"
    assert pit_violations(records, events, flink_stack.flink) == []
    rows = _enriched(records)
    # Spot checks the reference must agree with (it does, above): updates after an
    # impression are absent from it, updates at or before it are present.
    assert rows["i-a6"]["title"] == "Knit sweater v1"
    assert rows["i-a5"]["caption"] == "a red knit sweater"
    assert rows["i-a7"]["top_queries"] == ["sweater", "cardigan", "wool"]
    assert rows["i-a9"]["top_queries"] is None and rows["i-a9"]["boards_updated_at"] is None
    assert rows["i-c1"]["board_titles"] == ["t-e", "t-b", "t-c"]
    assert rows["i-c1"]["description"] is None  # null, never ""
    assert rows["i-a4"]["boards_updated_at"] == "2026-11-03T00:00:00.000000Z"
    assert rows["i-a2"]["event_time"] == "2026-11-02T01:00:00.000000Z"


@pytest.mark.slow
def test_late_records_go_to_the_dlq_with_reason_late_event(flink_stack: Settings) -> None:
    read_records(flink_stack, ENRICHED, 14, timeout_s=120)  # the watermark is past T0 + 97h
    late_impression = _imp("i-late", "p-a", T0 + 2 * H)
    late_caption = PinCaption(
        pin_id="p-b", caption="too late", captioner_version="v1", created_at=T0 + 3 * H
    )
    with producer(flink_stack) as prod:
        produce_events(prod, [late_impression, late_caption])
    for topic, event in (("impressions", late_impression), ("pin_captions", late_caption)):
        letters = [
            DeadLetter.model_validate_json(r.value)
            for r in read_records(flink_stack, f"{topic}.dlq", 1, timeout_s=60)
        ]
        assert len(letters) == 1, letters
        letter = letters[0]
        assert (letter.reason.value, letter.source_topic) == ("late_event", topic)
        assert letter.value is not None
        replayed = type(event).model_validate_json(letter.value)
        assert replayed == event
        assert letter.key_b64 == base64.b64encode(event.key.encode()).decode()
        assert "watermark" in letter.detail
    assert "i-late" not in _enriched(read_records(flink_stack, ENRICHED, 14, timeout_s=5))


@pytest.mark.slow
def test_stop_with_savepoint_and_redeploy_loses_and_repeats_nothing(
    flink_stack: Settings,
) -> None:
    read_records(flink_stack, ENRICHED, 14, timeout_s=120)
    stopped = cli(flink_stack, "jobs", "stop", "enrich", "--savepoint")
    assert stopped.returncode == 0, stopped.stderr
    savepoint = stopped.stdout.strip().splitlines()[-1]
    assert Path(savepoint, "_metadata").is_file()
    listed = cli(flink_stack, "jobs", "list")
    assert listed.returncode == 0 and "RUNNING" not in listed.stdout

    # Produced while the job is down: the restored job must pick these up from its offsets.
    later = T0 + 98 * H
    while_down: list[Event] = [
        PinCaption(pin_id="p-b", caption="a scarf", captioner_version="v1", created_at=later),
        _imp("i-b3", "p-b", later + H),
        _imp("i-a12", "p-a", later + 2 * H),
    ]
    with producer(flink_stack) as prod:
        produce_events(prod, while_down)
    deployed = cli(flink_stack, "jobs", "deploy", "enrich", "--from-savepoint", savepoint)
    assert deployed.returncode == 0, deployed.stderr
    assert "RUNNING" in cli(flink_stack, "jobs", "list").stdout
    advance_event_time(flink_stack, later + 2 * H)

    records = read_records(flink_stack, ENRICHED, 16, timeout_s=120)
    counts = Counter(r.key.decode() for r in records)
    assert set(counts) >= {"i-b3", "i-a12"} and len(counts) == 16
    assert max(counts.values()) == 1, f"duplicates after the restore: {counts}"
    rows = _enriched(records)
    assert rows["i-b3"]["caption"] == "a scarf"  # the version produced while it was down
    events = scenario() + while_down
    assert pit_violations(records, events, flink_stack.flink) == []


@pytest.mark.slow
@pytest.mark.stack
def test_up_status_down_leaves_no_flink_process(tmp_path: Path) -> None:
    settings = _flink_settings(tmp_path / "state")
    up = cli(settings, "up")
    assert up.returncode == 0, up.stderr
    state = stack.read_state(settings)
    assert state is not None
    flink = [s for s in state.services if s.name.startswith("flink-")]
    try:
        assert {s.name for s in flink} == {"flink-jobmanager", "flink-taskmanager"}
        status = cli(settings, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        health = {s["name"]: s for s in json.loads(status.stdout)["services"]}
        assert health["flink-jobmanager"]["healthy"] and health["flink-taskmanager"]["healthy"]
        assert "no running jobs" in health["flink-jobmanager"]["detail"]
        assert cli(settings, "jobs", "list").stdout.strip() == "no jobs on the cluster"
    finally:
        down = cli(settings, "down")
    assert down.returncode == 0, down.stderr
    assert not any(is_running(s) for s in flink)
    # Nothing else runs from this stack's folder either (the JVMs name it in their flags).
    mine = str(settings.state_dir)
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            assert mine not in cmdline.read_bytes().decode(errors="replace"), cmdline
        except OSError:
            continue
    assert os.path.exists(settings.state_dir)  # logs stay for post-mortems
