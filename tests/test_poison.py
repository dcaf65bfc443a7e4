"""Hostile records on every partition cost one dead letter each, never the stream.

Real broker and SQLite catalog: on every partition of `impressions`, good records are
interleaved with each kind of poison found from outside (a record whose dead letter would
exceed the request size, an integer past Iceberg's long, times that overflow in UTC, times
in 2099 and 1970, a NUL in text, an empty id). The sink must take every good record into
the table exactly once, put each poison record exactly once in `impressions.dlq` with its
reason, record every offset as consumed, and keep running; a restart finds nothing to do.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.catalog import open_catalog
from infra.config import Settings
from infra.kafka_io import producer, read_all
from streams.dlq import DeadLetter, Reason
from streams.iceberg_sink import IcebergSink
from streams.offsets import committed_offsets

TOPIC = "impressions"


def _impression(impression_id: str, at: datetime, **fields: Any) -> bytes:
    record = {
        "impression_id": impression_id,
        "request_id": f"r-{impression_id}",
        "user_id": "u-1",
        "query": "winter sweater",
        "pin_id": "p-1",
        "position": 1,
        "country": "US",
        "locale": "en-US",
        "event_time": at.isoformat(),
        **fields,
    }
    return json.dumps(record).encode()


def _poison(tag: str, at: datetime) -> list[tuple[str, bytes, Reason]]:
    """Each kind of poison record (named, for messages) with the reason it must get."""

    def bad(suffix: str, **fields: Any) -> bytes:
        return _impression(f"{tag}-{suffix}" if suffix else "", at, **fields)

    invalid, out_of_range = Reason.INVALID_VALUE, Reason.EVENT_TIME_OUT_OF_RANGE
    return [
        # 750 KB: under decode.max_record_bytes, but 1 MB once base64-encoded in a letter.
        ("750 KB", bad("big", query="x" * 750_000), Reason.OVERSIZED_TEXT),
        ("2^63", bad("pos", position=2**63), invalid),
        ("year 0001", bad("y1", event_time="0001-01-01T00:00:00+01:00"), invalid),
        ("year 9999", bad("y9999", event_time="9999-12-31T23:30:00-01:00"), invalid),
        ("2099", bad("2099", event_time="2099-06-01T00:00:00Z"), out_of_range),
        ("1970", bad("1970", event_time="1970-01-01T00:00:00Z"), out_of_range),
        ("NUL", bad("nul", query="sweater\x00"), invalid),
        ("empty id", bad(""), invalid),
    ]


def test_poison_on_every_partition_costs_one_dead_letter_each(running_stack: Settings) -> None:
    settings = running_stack.model_copy(
        update={"quality": running_stack.quality.model_copy(update={"enabled": False})}
    )
    at = datetime.now(UTC) - timedelta(hours=1)
    sent: list[tuple[Any, str | None, tuple[str, bytes, Reason] | None]] = []
    with producer(settings) as prod:
        partitions = sorted(prod.partitions_for(TOPIC))
        assert len(partitions) > 1
        for p in partitions:
            n = 0
            for kind in [*_poison(f"p{p}", at), None]:
                for _ in range(3):  # good records around every poison record
                    impression_id = f"good-{p}-{n}"
                    n += 1
                    value = _impression(impression_id, at)
                    future = prod.send(TOPIC, key=impression_id.encode(), value=value, partition=p)
                    sent.append((future, impression_id, None))
                if kind is not None:
                    future = prod.send(TOPIC, key=b"poison", value=kind[1], partition=p)
                    sent.append((future, None, kind))
        prod.flush(timeout=60)
    good: dict[str, tuple[int, int]] = {}  # impression id -> (partition, offset)
    poison: dict[tuple[int, int], tuple[str, bytes, Reason]] = {}
    end: dict[int, int] = {}
    for future, good_id, kind in sent:
        meta = future.get(timeout=60)
        where = (meta.partition, meta.offset)
        if kind is None:
            good[str(good_id)] = where
        else:
            poison[where] = kind
        end[meta.partition] = max(end.get(meta.partition, 0), meta.offset + 1)
    assert len(poison) == 8 * len(partitions)

    sink = IcebergSink(settings, TOPIC, TOPIC, batch_seconds=5)
    stats = sink.run(idle_timeout_s=4.0)  # returns: the sink did not die

    table = open_catalog(settings).load_table(f"{settings.catalog.namespace}.{TOPIC}")
    rows = table.scan().to_arrow().to_pylist()
    ids = Counter(r["impression_id"] for r in rows)
    assert set(ids) == set(good) and max(ids.values()) == 1, ids
    assert {(r["_kafka_partition"], r["_kafka_offset"]) for r in rows} == set(good.values())
    # Every offset is consumed: the table's ledger reaches the end of every partition.
    assert committed_offsets(table, TOPIC) == end
    assert stats.rows_committed == len(good) and stats.dead_letters == len(poison)

    letters = [
        DeadLetter.model_validate_json(r.value) for r in read_all(settings, "impressions.dlq")
    ]
    mine = Counter((d.partition, d.offset) for d in letters if d.source_topic == TOPIC)
    assert mine == Counter(set(poison)), "each poison record exactly once in the DLQ"
    limit = settings.decode.max_dead_letter_bytes
    for letter in letters:
        name, value, reason = poison[(letter.partition, letter.offset)]
        assert letter.reason == reason, (name, letter.detail)
        assert "\n" not in letter.detail and letter.consumer == sink.group_id
        assert letter.value_size == len(value)
        assert letter.value_sha256 == hashlib.sha256(value).hexdigest()
        assert letter.value is not None and value.startswith(letter.value)
        assert letter.value_truncated == (name == "750 KB"), name
        assert len(letter.to_bytes()) <= limit

    # A restart (another process) finds every offset done: no row twice, no letter twice.
    again = IcebergSink(settings, TOPIC, TOPIC, group_id="poison-restart", batch_seconds=5)
    restarted = again.run(idle_timeout_s=3.0)
    assert restarted.rows_committed == 0 and restarted.dead_letters == 0
    assert table.refresh().scan().to_arrow().num_rows == len(good)
