"""`freshlabel dlq replay` selects the right letters and sends their exact bytes back.

The selection is pure (streams/dlq_replay.py:select), so it is checked without a broker:
reason and time filters, the source topic or `--to`, exact key/value bytes, and a truncated
letter named by its source coordinates instead of being replayed from its prefix.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra.config import Settings
from infra.kafka_io import producer, read_all
from infra.topics import ensure_topics
from streams.dlq import DeadLetter, Reason
from streams.dlq_replay import ReplayReport, replay, select


def _letter(reason: Reason, value: bytes, offset: int, failed_at: datetime) -> DeadLetter:
    letter = DeadLetter.of(
        topic="impressions",
        partition=2,
        offset=offset,
        key=b"imp-%d" % offset,
        value=value,
        reason=reason,
        detail="test",
        consumer="sink",
    )
    return letter.model_copy(update={"failed_at": failed_at})


def test_select_filters_and_keeps_the_original_bytes() -> None:
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    raw = [
        _letter(Reason.OVERSIZED_TEXT, b'{"x": "\xff"}', 1, t0).to_bytes(),
        _letter(Reason.MALFORMED_JSON, b"{not json", 2, t0).to_bytes(),
        _letter(Reason.OVERSIZED_TEXT, b"old", 3, t0 - timedelta(days=2)).to_bytes(),
        _letter(Reason.OVERSIZED_TEXT, b"y" * 20_000, 4, t0).fitted(8192).to_bytes(),
        b"not a letter",
    ]
    report = ReplayReport()
    out = list(select(raw, {Reason.OVERSIZED_TEXT}, t0 - timedelta(hours=1), None, report))
    assert [(r.topic, r.key, r.value) for r in out] == [("impressions", b"imp-1", b'{"x": "\xff"}')]
    assert report.read == 5 and report.unreadable == 1
    assert report.replayed == {"oversized_text": 1}
    assert report.skipped == {"malformed_json": 1, "oversized_text": 1}
    assert report.truncated == ["impressions/2/4"]

    everything = list(select(raw[:3], None, None, "impressions.retry", ReplayReport()))
    assert [r.topic for r in everything] == ["impressions.retry"] * 3


def test_replay_sends_the_records_back_through_the_broker(running_stack: Settings) -> None:
    settings = running_stack
    dlq, target = "replay-test.dlq", "replay-test.target"
    ensure_topics(settings, [dlq, target])
    t0 = datetime.now(UTC)
    with producer(settings) as out:
        for offset, reason in enumerate((Reason.OVERSIZED_TEXT, Reason.MALFORMED_JSON)):
            letter = _letter(reason, b"value-%d" % offset, offset, t0)
            out.send(dlq, value=letter.to_bytes()).get(timeout=30)
    report = replay(settings, dlq, {Reason.OVERSIZED_TEXT}, to_topic=target, idle_timeout_s=1)
    assert report.replayed == {"oversized_text": 1}
    sent = read_all(settings, target, idle_timeout_s=1)
    assert [(r.key, r.value) for r in sent] == [(b"imp-0", b"value-0")]
