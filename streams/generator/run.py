"""Library entry points: iterate a world's events, or produce them with truth and sample."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.config import EVENT_TOPICS, GeneratorSettings, Settings
from schemas.base import Event
from streams.generator.timeline import Timeline


@dataclass
class GenerationReport:
    # Events generated per topic (all of them were produced when Kafka was on).
    counts: dict[str, int]
    # Events the broker acknowledged per topic; None without Kafka.
    acknowledged: dict[str, int] | None
    late: dict[str, int]
    seconds: float
    truth_dir: Path | None
    sample_path: Path | None
    sample_rows: int | None

    @property
    def events(self) -> int:
        return sum(self.counts.values())

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "acknowledged": self.acknowledged,
            "late": self.late,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "truth_dir": str(self.truth_dir) if self.truth_dir else None,
            "sample_path": str(self.sample_path) if self.sample_path else None,
            "sample_rows": self.sample_rows,
        }


def generate_events(settings: GeneratorSettings) -> Iterator[Event]:
    """Every event of the world of `settings`, in production order (no Kafka, no files)."""
    return Timeline(settings).events()


def run(
    settings: Settings,
    *,
    kafka: bool = True,
    truth: bool = True,
    sample_path: Path | None = None,
    sample_rows: int | None = None,
) -> GenerationReport:
    """Generate the world of `settings.generator`; produce it to Kafka (acknowledged), write
    its truth files to `truth_dir` and, if asked, a labeled sample, all in one pass."""
    # Imported here: pyarrow is only needed when files are written.
    from streams.generator.producer_process import ProducerProcess
    from streams.generator.sample import SampleCollector, write_sample_table
    from streams.generator.truth import EventLog, truth_dir, write_truth
    from streams.generator.writer import paced

    gen = settings.generator
    started = time.monotonic()
    timeline = Timeline(gen)
    watchers: list[Any] = []
    writer = None
    if kafka:
        from infra.topics import ensure_topics

        writer = ProducerProcess(settings)
        ensure_topics(settings, list(EVENT_TOPICS))
    if writer is not None:
        watchers.append(writer)
    log = EventLog() if truth else None
    if log is not None:
        watchers.append(log)
    collector = None
    if sample_path is not None:
        collector = SampleCollector(settings, timeline, sample_rows or gen.sample_rows)
        watchers.append(collector)
    try:
        for event in paced(timeline.events(), gen.rate):
            for watcher in watchers:
                watcher.observe(event)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    acknowledged = writer.close() if writer is not None else None
    seconds = time.monotonic() - started

    directory = None
    if log is not None:
        directory = truth_dir(settings)
        write_truth(directory, timeline, log, gen.model_dump(mode="json"))
    rows = None
    if collector is not None and sample_path is not None:
        table = collector.table()
        write_sample_table(table, sample_path)
        rows = table.num_rows
    return GenerationReport(
        counts={t: timeline.counts.get(t, 0) for t in EVENT_TOPICS},
        acknowledged=acknowledged,
        late=dict(timeline.late),
        seconds=seconds,
        truth_dir=directory,
        sample_path=sample_path,
        sample_rows=rows,
    )


def produce_world(settings: Settings, *, truth: bool = True) -> dict[str, int]:
    """Produce the world to Kafka; returns events acknowledged by the broker per topic."""
    report = run(settings, kafka=True, truth=truth)
    assert report.acknowledged is not None
    return report.acknowledged
