"""The enrichment job's time semantics under faults, on the real broker and a real Flink cluster.

One stack and one job for the module, the tests in order:

- a caption that arrives behind the watermark is not lost: it is dead-lettered with the range
  of impressions that missed it, and every later impression of its pin carries it; the
  reference (streams/enrich/reference.py) follows the same rule, so no point-in-time
  violation;
- impressions dated 2099 and 1970 are refused with reason event_time_out_of_range before
  they can move the watermark: after a lull, normal impressions are all enriched, none late;
- the job stopped with a savepoint while a backlog of 10 simulated minutes is produced, then
  restored: no late dead letter, no violation, exactly one enriched row per impression;
- features outlive Kafka retention: the job is replaced by a fresh deploy (empty state,
  earliest offsets) over topics that hold only what compaction and retention leave of two
  pins' history (their latest content and caption, 100 and decode.max_age_days + 30 days
  old, and their recent impressions; the older pin's versions read behind the watermark);
  their new impressions carry those versions.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from infra.config import Settings
from infra.kafka_io import producer
from schemas import Event, Impression, PinCaption, PinContent
from streams.dlq import DeadLetter
from streams.enrich import operations
from streams.enrich.clock import NUDGE, advance_event_time
from streams.enrich.reference import late_versions, pit_violations
from streams.produce import produce_events
from tests.conftest import stack_running, starts_servers
from tests.test_enrich import ENRICHED, _flink_settings, _imp, cli, read_records

pytestmark = pytest.mark.slow

# Recent enough for the decode bounds around the wall clock (decode.max_age_days).
T1 = (datetime.now(UTC) - timedelta(days=20)).replace(hour=0, minute=0, second=0, microsecond=0)
M = timedelta(minutes=1)


def _caption(pin: str, text: str, at: datetime) -> PinCaption:
    return PinCaption(pin_id=pin, caption=text, captioner_version="v1", created_at=at)


class Run:
    """What the module produced so far: the on-time event log and the late versions."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.events: list[Event] = []

    def produce(self, events: Sequence[Event]) -> None:
        with producer(self.settings) as prod:
            produce_events(prod, events)
        self.events += events

    def impressions(self) -> list[Impression]:
        return [e for e in self.events if isinstance(e, Impression)]

    def letters(self, topic: str, at_least: int = 0, timeout_s: float = 5) -> list[DeadLetter]:
        records = read_records(self.settings, f"{topic}.dlq", at_least, timeout_s=timeout_s)
        return [DeadLetter.model_validate_json(r.value) for r in records]

    def enriched(self, at_least: int) -> list[Any]:
        return read_records(self.settings, ENRICHED, at_least, timeout_s=120)


@pytest.fixture(scope="module")
@starts_servers
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with stack_running(_flink_settings(tmp_path_factory.mktemp("enrich-faults") / "state")) as s:
        operations.deploy(s)
        yield Run(s)


def test_late_caption_applies_to_later_impressions(run: Run) -> None:
    # p-l: caption v1, an impression, then (once the watermark is an hour past) a caption v2
    # dated 20 minutes in: late. p-m: a caption at 30 min, then a late one dated 15 min,
    # older than the on-time one, so it never shows.
    run.produce(
        [
            _caption("p-l", "v1", T1),
            _caption("p-m", "newer", T1 + 30 * M),
            _imp("i-l1", "p-l", T1 + 10 * M),
            _imp("i-l2", "p-l", T1 + 25 * M),
        ]
    )
    advance_event_time(run.settings, T1 + 60 * M)
    assert len(run.enriched(2)) == 2
    late = [_caption("p-l", "v2 (late)", T1 + 20 * M), _caption("p-m", "older", T1 + 15 * M)]
    with producer(run.settings) as prod:
        produce_events(prod, late)
    letters = run.letters("pin_captions", at_least=2, timeout_s=60)
    versions = late_versions(letters)
    assert sorted(v.event.pin_id for v in versions) == ["p-l", "p-m"], letters
    assert all(v.event in late for v in versions)
    # The watermark the late captions met: past both impressions, at most the clock's time.
    last = T1 + 60 * M + 2 * NUDGE  # advance_event_time ends the watermark 2 ms past it
    assert all(T1 + 25 * M <= v.watermark <= last for v in versions), versions
    for letter in letters:
        assert "impressions of that pin after the watermark" in letter.detail
        assert "through" in letter.detail  # the range of impressions that missed it

    later = [_imp("i-l3", "p-l", T1 + 90 * M), _imp("i-m1", "p-m", T1 + 90 * M)]
    run.produce(later)
    advance_event_time(run.settings, T1 + 90 * M)
    records = run.enriched(4)
    rows = {r.key.decode(): r for r in records}
    caption = {iid: json.loads(r.value)["caption"] for iid, r in rows.items()}
    assert caption == {"i-l1": "v1", "i-l2": "v1", "i-l3": "v2 (late)", "i-m1": "newer"}
    assert pit_violations(records, run.events, run.settings.flink, late=versions) == []
    # Without the late versions the reference disagrees exactly where the job applied one.
    wrong = pit_violations(records, run.events, run.settings.flink)
    assert {(v.impression_id, v.field) for v in wrong} == {
        ("i-l3", "caption"),
        ("i-l3", "caption_updated_at"),
    }


def test_far_future_and_past_times_are_refused_and_nothing_turns_late(run: Run) -> None:
    future = _imp("i-2099", "p-l", datetime(2099, 1, 1, tzinfo=UTC))
    past = _imp("i-1970", "p-l", datetime(1970, 1, 2, tzinfo=UTC))
    with producer(run.settings) as prod:
        produce_events(prod, [future, past])
    letters = run.letters("impressions", at_least=2, timeout_s=60)
    assert all(letter.value is not None for letter in letters), letters
    refused = {
        Impression.model_validate_json(letter.value).impression_id: letter
        for letter in letters
        if letter.value is not None
    }
    assert set(refused) == {"i-2099", "i-1970"}
    assert {letter.reason.value for letter in refused.values()} == {"event_time_out_of_range"}
    assert "decode.max_future_s" in refused["i-2099"].detail

    time.sleep(10)  # the lull: with a 2099 watermark everything after would now be late
    start = T1 + 120 * M
    normal = [_imp(f"i-n{n}", f"p-{n % 3}", start + n * timedelta(seconds=3)) for n in range(20)]
    run.produce(normal)
    advance_event_time(run.settings, normal[-1].event_time)
    records = run.enriched(len(run.impressions()))
    enriched = Counter(r.key.decode() for r in records)
    assert all(enriched[i.impression_id] == 1 for i in normal), enriched
    assert not {"i-2099", "i-1970"} & set(enriched)
    assert len(run.letters("impressions")) == 2, "no normal impression was dead-lettered"


def test_savepoint_restore_over_a_backlog(run: Run) -> None:
    before = len(run.impressions())
    assert len(run.enriched(before)) == before
    stopped = cli(run.settings, "jobs", "stop", "enrich", "--savepoint")
    assert stopped.returncode == 0, stopped.stderr
    savepoint = stopped.stdout.strip().splitlines()[-1]
    assert Path(savepoint, "_metadata").is_file()

    # Ten simulated minutes, produced while the job is down, in event-time order.
    start = T1 + 180 * M
    backlog: list[Event] = []
    for s in range(0, 600, 5):
        at = start + timedelta(seconds=s)
        pin = f"p-b{s % 4}"
        if s % 60 == 0:
            backlog.append(_caption(pin, f"caption at {s}s", at))
        if s % 150 == 0:
            backlog.append(PinContent(pin_id=pin, title=f"title at {s}s", updated_at=at))
        backlog.append(_imp(f"i-b{s}", pin, at + timedelta(milliseconds=1)))
    run.produce(backlog)
    deployed = cli(run.settings, "jobs", "deploy", "enrich", "--from-savepoint", savepoint)
    assert deployed.returncode == 0, deployed.stderr
    advance_event_time(run.settings, start + 10 * M)

    impressions = run.impressions()
    records = run.enriched(len(impressions))
    counts = Counter(r.key.decode() for r in records)
    assert counts == Counter(i.impression_id for i in impressions), "exactly one row each"
    late = [
        letter
        for topic in ("impressions", "pin_content", "pin_captions")
        for letter in run.letters(topic)
        if letter.reason.value == "late_event"
    ]
    versions = late_versions(late)
    assert len(late) == len(versions) == 2, late  # only the two captions of the first test
    assert pit_violations(records, run.events, run.settings.flink, late=versions) == []


# Simulated retention of the topics that are not compacted (impressions, saves, engagements).
RETENTION = timedelta(days=3)
COMPACTED = ("pin_content", "pin_captions")  # keyed by pin_id: the last record per pin stays


def retained(history: list[Event], now: datetime) -> list[Event]:
    """What the cluster still holds of `history` (in write order) at `now`, in write order:
    of the compacted topics the last record WRITTEN per key, of the others what is younger
    than RETENTION. (The embedded broker neither compacts nor deletes: write only this.)"""
    last = {(e.topic, e.key): n for n, e in enumerate(history) if e.topic in COMPACTED}
    return [
        e
        for n, e in enumerate(history)
        if (e.topic in COMPACTED and last[(e.topic, e.key)] == n)
        or (e.topic not in COMPACTED and e.time > now - RETENTION)
    ]


def _history(pin: str, at: datetime, now: datetime) -> list[Event]:
    """A pin edited and captioned twice around `at`, shown then and again lately."""
    day = timedelta(days=1)
    return [
        PinContent(pin_id=pin, title=f"{pin} v1", description="first", updated_at=at - 9 * day),
        _caption(pin, f"{pin} caption v1", at - 8 * day),
        _imp(f"i-{pin}-then", pin, at - 5 * day),
        PinContent(pin_id=pin, title=f"{pin} v2", description="latest", updated_at=at),
        _caption(pin, f"{pin} caption v2", at + M),
        _imp(f"i-{pin}-lately", pin, now - 30 * M),
    ]


def test_fresh_deploy_applies_versions_older_than_retention_and_max_age(run: Run) -> None:
    operations.stop(run.settings, savepoint=False)
    # The present of this test: after everything the module produced, so the recent
    # impressions are on time for the new job. The versions are older than the retention,
    # p-rmax's also older than decode.max_age_days (against the wall clock).
    now = T1 + 300 * M
    old = now - timedelta(days=100)
    ancient = datetime.now(UTC).replace(microsecond=0) - timedelta(
        days=run.settings.decode.max_age_days + 30
    )
    history = sorted(
        _history("p-r100", old, now) + _history("p-rmax", ancient, now), key=lambda e: e.time
    )
    survivors = retained(history, now)
    assert {type(e).__name__ for e in survivors if e.time < now - RETENTION} == {
        "PinContent",
        "PinCaption",
    }
    # p-r100's versions are read with the topics' backlog, as usual. p-rmax's partitions
    # deliver late: only after the impressions moved the watermark past p-rmax's recent
    # impression (it could happen at start-up), so its versions come behind the watermark.
    behind = [e for e in survivors if e.topic in COMPACTED and e.key == "p-rmax"]
    with producer(run.settings) as prod:
        produce_events(prod, [e for e in survivors if e not in behind])
    operations.deploy(run.settings)  # fresh: empty state, every topic from the earliest offset
    advance_event_time(run.settings, now - 30 * M)
    lately = {e.impression_id for e in survivors if isinstance(e, Impression)}
    _records_of(run.settings, lately, timeout_s=120)
    new = [_imp("i-p-r100-new", "p-r100", now + M), _imp("i-p-rmax-new", "p-rmax", now + M)]
    with producer(run.settings) as prod:
        produce_events(prod, [*behind, *new])
    advance_event_time(run.settings, now + M)

    mine = lately | {e.impression_id for e in new}
    records = _records_of(run.settings, mine, timeout_s=120)
    assert Counter(r.key.decode() for r in records) == Counter(mine), "each exactly once"
    rows = {r.key.decode(): json.loads(r.value) for r in records}
    for pin, at in (("p-r100", old), ("p-rmax", ancient)):
        row = rows[f"i-{pin}-new"]
        assert (row["title"], row["description"]) == (f"{pin} v2", "latest"), row
        assert row["caption"] == f"{pin} caption v2", row
        assert row["content_updated_at"] == f"{at:%Y-%m-%dT%H:%M:%S}.000000Z", row
    assert rows["i-p-r100-lately"]["title"] == "p-r100 v2"
    assert rows["i-p-rmax-lately"]["title"] is None  # enriched before its versions came
    # p-rmax's versions were late, not out of range: dead-lettered as late versions, applied
    # from the watermark they met on (the reference checks every row with that watermark).
    letters = [
        letter
        for topic in COMPACTED
        for letter in run.letters(topic)
        if letter.value is not None and json.loads(letter.value)["pin_id"] in ("p-r100", "p-rmax")
    ]
    late = {
        (letter.source_topic, json.loads(letter.value)["pin_id"])
        for letter in letters
        if letter.value is not None  # all of them, as selected above
    }
    assert {("pin_content", "p-rmax"), ("pin_captions", "p-rmax")} <= late, letters
    assert all(letter.reason.value == "late_event" for letter in letters), letters
    assert all("kept as a late version" in letter.detail for letter in letters), letters
    versions = late_versions(letters)
    assert pit_violations(records, [*survivors, *new], run.settings.flink, late=versions) == []


def _records_of(settings: Settings, keys: set[str], timeout_s: float) -> list[Any]:
    """The records of impressions.enriched keyed by `keys`, once every key arrived (or the
    time is up), plus what arrives in the 2 s after."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = [r for r in read_records(settings, ENRICHED, 0, 1) if r.key.decode() in keys]
        if {r.key.decode() for r in records} >= keys or time.monotonic() > deadline:
            return records
        time.sleep(1)
