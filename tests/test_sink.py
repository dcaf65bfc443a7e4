"""The Iceberg sink on the real broker and catalog: offsets in snapshots, resume, DLQ."""

from __future__ import annotations

import json

from infra.catalog import open_catalog
from infra.config import Settings
from infra.kafka_io import producer, read_all
from schemas import PinCaption
from streams.iceberg_sink import IcebergSink
from streams.offsets import committed_offsets
from streams.produce import produce_events
from streams.samples import sample_events


def _rows(settings: Settings, table: str) -> list[dict]:  # type: ignore[type-arg]
    catalog = open_catalog(settings)
    return catalog.load_table(f"freshlabel.{table}").scan().to_arrow().to_pylist()


def test_sink_commits_offsets_and_resumes_without_duplicates(running_stack: Settings) -> None:
    settings = running_stack
    captions = [e for e in sample_events() if isinstance(e, PinCaption)]
    with producer(settings) as prod:
        produce_events(prod, captions[:2])
        prod.send("pin_captions", key=b"x", value=b"{broken").get(timeout=30)

    first = IcebergSink(settings, "pin_captions", "pin_captions", batch_seconds=30)
    stats = first.run(idle_timeout_s=2.0)
    assert stats.rows_committed == 2 and stats.dead_letters == 1

    with producer(settings) as prod:
        produce_events(prod, captions[2:])
    # A new process (fresh group id, so Kafka group offsets cannot help): resumes from the
    # offsets recorded in the table's snapshots.
    second = IcebergSink(
        settings, "pin_captions", "pin_captions", group_id="another-group", batch_seconds=30
    )
    stats = second.run(idle_timeout_s=2.0)
    assert stats.rows_committed == len(captions) - 2 and stats.dead_letters == 0

    rows = _rows(settings, "pin_captions")
    assert sorted(r["pin_id"] for r in rows) == sorted(c.pin_id for c in captions)
    assert {r["caption"] for r in rows} == {c.caption for c in captions}
    assert all(r["_batch_id"] and r["_kafka_offset"] >= 0 for r in rows)

    table = open_catalog(settings).load_table("freshlabel.pin_captions")
    offsets = committed_offsets(table, "pin_captions")
    assert sum(offsets.values()) == len(captions) + 1  # every record, the dead letter too

    letters = [json.loads(r.value) for r in read_all(settings, "pin_captions.dlq", 2.0)]
    assert [d["reason"] for d in letters] == ["malformed_json"]
