"""`make demo`: bring the stack up, push every event type through broker and sink into
Iceberg, print a report (also written as JSON), and bring the stack down."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from infra import stack
from infra.catalog import open_catalog
from infra.config import EVENT_TOPICS, Settings
from schemas.topics import dlq_topic, model_for_topic
from streams.iceberg_sink import IcebergSink
from streams.kafka_io import producer, read_all
from streams.produce import produce_events
from streams.samples import sample_events

# One of each kind of bad input the decode step refuses, sent to the impressions topic.
BAD_RECORDS: list[tuple[str, bytes]] = [
    ("malformed_json", b'{"impression_id": "x", '),
    ("invalid_utf8", b'{"impression_id": "\xff\xfe"}'),
    ("missing_field", b'{"impression_id": "imp-bad-1"}'),
    ("empty_value", b""),
]


def run(settings: Settings) -> dict[str, Any]:
    started = time.monotonic()
    stack.up(settings)
    try:
        return _pipeline(settings, started)
    finally:
        stack.down(settings)


def _pipeline(settings: Settings, started: float) -> dict[str, Any]:
    events = sample_events()
    with producer(settings) as prod:
        produced = produce_events(prod, events)
        for _, value in BAD_RECORDS:
            prod.send("impressions", key=b"bad", value=value)
        prod.flush()
    rows: dict[str, int] = {}
    dead: Counter[str] = Counter()
    catalog = open_catalog(settings)
    for topic in EVENT_TOPICS:
        table = model_for_topic(topic).table
        sink = IcebergSink(settings, topic, table, batch_seconds=30)
        stats = sink.run(idle_timeout_s=3.0)
        dead.update(stats.dead_letters_by_reason)
        scanned = catalog.load_table(f"{settings.catalog.namespace}.{table}").scan()
        rows[table] = scanned.to_arrow().num_rows
    dlq_records = {t: len(read_all(settings, dlq_topic(t), 2.0)) for t in EVENT_TOPICS}
    sample = (
        catalog.load_table(f"{settings.catalog.namespace}.impressions")
        .scan(selected_fields=("impression_id", "query", "pin_id", "country", "event_time"))
        .to_arrow()
        .slice(0, 4)
        .to_pylist()
    )
    return {
        "events_produced": produced,
        "bad_records_produced": len(BAD_RECORDS),
        "rows_in_iceberg": rows,
        "dlq_records": dlq_records,
        "dlq_by_reason": dict(dead),
        "sample_rows": [{k: str(v) for k, v in row.items()} for row in sample],
        "seconds": round(time.monotonic() - started, 1),
    }


def print_report(report: dict[str, Any]) -> None:
    print("\nfreshlabel demo report")
    print("=" * 60)
    print(f"{'topic':<16}{'produced':>10}{'in iceberg':>12}{'dlq':>6}")
    for topic in EVENT_TOPICS:
        table = model_for_topic(topic).table
        print(
            f"{topic:<16}{report['events_produced'].get(topic, 0):>10}"
            f"{report['rows_in_iceberg'].get(table, 0):>12}{report['dlq_records'].get(topic, 0):>6}"
        )
    print(f"dead letters by reason: {report['dlq_by_reason']}")
    print("sample impressions from Iceberg:")
    for row in report["sample_rows"]:
        print("  " + json.dumps(row, ensure_ascii=False))
    print(f"took {report['seconds']} s")


def write_report(settings: Settings, report: dict[str, Any]) -> None:
    path = settings.state_dir / "demo-report.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(f"report written to {path}")
