"""Move the enrichment job's event-time clock forward when the inputs have gone quiet.

The job emits an impression only once the watermark (newest event time minus
watermark_delay_s + allowed_lateness_s) has passed it, so the last impressions of a finite
replay would wait for newer events forever. A clock record `{"event_time": T}` on
`flink.clock_topic` is one more event for the watermark and nothing else: once every other
topic is idle (flink.source_idle_timeout_s), the watermark reaches T minus the hold.
Anything that arrives later with an older event time is late (dead-lettered).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from infra.config import Settings
from infra.topics import ensure_topics
from streams.kafka_io import producer


def ensure_clock_topic(settings: Settings) -> None:
    ensure_topics(settings, [settings.flink.clock_topic])


def advance_event_time(settings: Settings, until: datetime) -> datetime:
    """Let the job emit every impression at or before `until`; returns the clock time sent."""
    f = settings.flink
    tick = until + timedelta(seconds=f.watermark_delay_s + f.allowed_lateness_s)
    ensure_clock_topic(settings)
    with producer(settings) as prod:
        prod.send(
            f.clock_topic,
            key=b"clock",
            value=f'{{"event_time": "{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"}}'.encode(),
        ).get(timeout=30)
    return tick
