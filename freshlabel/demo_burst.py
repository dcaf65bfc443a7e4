"""`make demo`'s bad-data burst: a short run of broken records through the real sinks.

    from freshlabel.demo_burst import inject_bad_burst
    burst = inject_bad_burst(settings)       # the stack must be up
    report["dq_alerts"] = burst.dq_alerts     # firing alerts by check
    report["quarantined_rows"] = burst.quarantined_rows

It writes to the `impressions.enriched` and `labels` topics and runs the Iceberg sink on
each (one sink run per phase, so each phase is one batch):
1. a clean batch of enriched impressions, the reference the next batches are judged by;
2. missing captions: a full batch whose rows lost their caption (warning, rows commit);
3. a volume drop: a twentieth of the rows over the same span of event time (warning);
4. a broken teacher output: labels, a tenth of them broken four ways (probabilities not
   summing to 1, out of range, a scale that disagrees with them, no teacher version):
   critical, those rows go to `labels_quarantine` and the rest commits.
The alerts are read back from the alerts topic; an HTML report covers the burst.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field
from pyiceberg.expressions import GreaterThanOrEqual

from infra.catalog import open_catalog
from infra.config import Settings
from infra.kafka_io import producer, read_all
from quality.samples import changed, enriched_impressions, labels
from schemas.base import Event
from schemas.quality import QUARANTINE_TABLES
from streams.iceberg_sink import IcebergSink, SinkStats
from streams.produce import produce_events


class BurstReport(BaseModel):
    # Firing alerts raised during the burst, by "table.check".
    dq_alerts: dict[str, int] = Field(default_factory=dict)
    quarantined_rows: int = 0
    quarantined_by_table: dict[str, int] = Field(default_factory=dict)
    rows_committed: dict[str, int] = Field(default_factory=dict)
    alert_summaries: list[str] = Field(default_factory=list)
    html_report: str | None = None


def _run_sink(settings: Settings, topic: str, table: str, events: Sequence[Event]) -> SinkStats:
    with producer(settings) as prod:
        produce_events(prod, events)
    sink = IcebergSink(settings, topic, table, batch_seconds=3600)
    return sink.run(idle_timeout_s=2.0)


def _enriched_phases(settings: Settings, token: str, rows: int, stats: list[SinkStats]) -> None:
    end = datetime.now(UTC)
    phases: list[Sequence[Event]] = [
        enriched_impressions(rows, end, seed=1, prefix=f"{token}-clean"),
        [
            changed(e, caption=None, caption_updated_at=None)
            for e in enriched_impressions(rows, end, seed=2, prefix=f"{token}-nocaption")
        ],
        enriched_impressions(max(rows // 20, 1), end, seed=3, prefix=f"{token}-drop"),
    ]
    for events in phases:
        stats.append(_run_sink(settings, "impressions.enriched", "impressions_enriched", events))


def _broken_labels(token: str, rows: int) -> Sequence[Event]:
    made = labels(rows, datetime.now(UTC), seed=4, prefix=token)
    for i in range(0, rows, 10):
        kind = (i // 10) % 4
        if kind == 0:
            probs = [0.6, 0.6, 0.3, 0.2]
            score = sum(k * p for k, p in enumerate(probs))
            made[i] = changed(made[i], probs=probs, score=score)
        elif kind == 1:
            made[i] = changed(made[i], probs=[1.4, -0.2, -0.1, -0.1], score=-0.6)
        elif kind == 2:
            made[i] = changed(made[i], label_scale=5)
        else:
            # An empty teacher_version is refused at decode now (a dedupe-key field).
            made[i] = changed(made[i], input_hash="")
    return made


def inject_bad_burst(settings: Settings, rows_per_batch: int = 200) -> BurstReport:
    """Run the burst against the stack `settings` points at; see the module docstring."""
    started = datetime.now(UTC)
    token = f"burst{time.time_ns()}"  # fresh ids: the sinks deduplicate by event key
    tuned = settings.model_copy(deep=True)
    # The burst brings its own clean reference batch: judge against it at once.
    tuned.quality.reference_min_batches = 1

    enriched_stats: list[SinkStats] = []
    worker = threading.Thread(
        target=_enriched_phases, args=(tuned, token, rows_per_batch, enriched_stats)
    )
    worker.start()
    try:
        label_stats = _run_sink(tuned, "labels", "labels", _broken_labels(token, rows_per_batch))
    finally:
        worker.join()

    report = BurstReport(
        rows_committed={
            "impressions_enriched": sum(s.rows_committed for s in enriched_stats),
            "labels": label_stats.rows_committed,
        }
    )
    firing: Counter[str] = Counter()
    for record in read_all(settings, settings.quality.alerts_topic, idle_timeout_s=1.5):
        alert = json.loads(record.value)
        if alert["status"] == "firing" and datetime.fromisoformat(alert["at"]) >= started:
            firing[f"{alert['table']}.{alert['check']}"] += 1
            report.alert_summaries.append(alert["summary"])
    report.dq_alerts = dict(sorted(firing.items()))

    catalog = open_catalog(settings)
    for name in QUARANTINE_TABLES.values():
        table = catalog.load_table(f"{settings.catalog.namespace}.{name}")
        scan = table.scan(
            row_filter=GreaterThanOrEqual("_ingested_at", started.isoformat()),
            selected_fields=("_kafka_offset",),
        )
        report.quarantined_by_table[name] = scan.to_arrow().num_rows
    report.quarantined_rows = sum(report.quarantined_by_table.values())

    from quality.report import write_report

    html = write_report(settings, since=started, out_dir=settings.state_dir / "dq-report")
    report.html_report = str(Path(html))
    return report
