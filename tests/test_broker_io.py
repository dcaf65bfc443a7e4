"""Produce/consume through the real broker: commit, resume, and DLQ routing."""

from __future__ import annotations

import json

import pytest
from kafka import OffsetAndMetadata, TopicPartition

from infra.config import Settings
from infra.kafka_io import consumer, group_offsets, producer, read_all
from schemas import Impression
from streams.decode import DeadLetterWriter, Decoder
from streams.dlq import DeadLetter, Reason
from streams.produce import produce_events
from streams.samples import sample_events
from tests.test_decode import BAD_INPUTS, GOOD


def _drain(c, want: int, rounds: int = 60) -> list:  # type: ignore[no-untyped-def]
    got: list = []
    for _ in range(rounds):
        for batch in c.poll(timeout_ms=500).values():
            got.extend(batch)
        if len(got) >= want:
            break
    return got


def test_consumer_group_commits_and_resumes(running_stack: Settings) -> None:
    settings = running_stack
    impressions = [e for e in sample_events() if isinstance(e, Impression)]
    with producer(settings) as prod:
        assert produce_events(prod, impressions) == {"impressions": len(impressions)}

    first = consumer(settings, "resume-test", "impressions")
    got = _drain(first, 8)
    # Commit only the first 8 records of each partition we saw, then leave the group.
    upto: dict[int, int] = {}
    for r in got[:8]:
        upto[r.partition] = max(upto.get(r.partition, -1), r.offset)
    first.commit(
        {
            TopicPartition("impressions", p): OffsetAndMetadata(o + 1, "", -1)
            for p, o in upto.items()
        }
    )
    first.close()
    # What the group committed is what an operator (and the demo) reads back.
    assert group_offsets(settings, "resume-test", "impressions") == {
        p: o + 1 for p, o in upto.items()
    }
    assert group_offsets(settings, "resume-test", "labels") == {}

    second = consumer(settings, "resume-test", "impressions")
    rest = _drain(second, len(impressions) - 8)
    second.close()
    seen = {(r.partition, r.offset) for r in got[:8]} | {(r.partition, r.offset) for r in rest}
    assert len(seen) == len(impressions)
    assert not {(r.partition, r.offset) for r in got[:8]} & {(r.partition, r.offset) for r in rest}
    # Keyed by impression id, so each impression lands whole in one partition.
    decoded = {Impression.model_validate_json(r.value).impression_id for r in got[:8] + rest}
    assert decoded == {i.impression_id for i in impressions}


@pytest.mark.parametrize(("value", "reason"), BAD_INPUTS)
def test_bad_input_lands_in_dlq_with_reason(
    running_stack: Settings, value: bytes | None, reason: Reason
) -> None:
    settings = running_stack
    topic = "impressions"  # records are matched by partition/offset, so others don't interfere
    settings = settings.model_copy(
        update={
            "decode": settings.decode.model_copy(
                update={"max_text_bytes": 256, "max_record_bytes": 4096}
            )
        }
    )
    with producer(settings) as prod:
        meta = prod.send(topic, key=b"bad", value=value).get(timeout=30)
        # one valid record too, to show it is not held back by the bad one
        prod.send(topic, key=b"ok", value=json.dumps(GOOD).encode()).get(timeout=30)
    decoder: Decoder[Impression] = Decoder(topic, settings.decode, "dlq-test")
    writer = DeadLetterWriter(producer(settings))
    records = read_all(settings, topic, 2.0)
    target = next(r for r in records if (r.partition, r.offset) == (meta.partition, meta.offset))
    out = decoder.decode(target)
    assert isinstance(out, DeadLetter)
    ok = next(r for r in records if r.key == b"ok")
    assert isinstance(decoder.decode(ok), Impression)
    writer.send(out)
    writer.flush()
    letters = [
        DeadLetter.model_validate_json(r.value) for r in read_all(settings, f"{topic}.dlq", 2.0)
    ]
    mine = [d for d in letters if (d.partition, d.offset) == (meta.partition, meta.offset)]
    assert len(mine) == 1
    assert mine[0].reason == reason
    assert mine[0].source_topic == topic and mine[0].value == value
    assert decoder.counters.by_reason() == {reason.value: 1}
