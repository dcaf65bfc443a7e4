"""Move the enrichment job's event-time clock forward when the inputs have gone quiet.

The job emits an impression only once the watermark (newest event time minus
watermark_delay_s + allowed_lateness_s) has passed it, so the last impressions of a finite
replay would wait for newer events forever. A clock record `{"event_time": T}` on
`flink.clock_topic` is one more event for the watermark and nothing else: once every other
topic is idle (flink.source_idle_timeout_s), the watermark reaches T minus the hold.
Anything that arrives later with an older event time is late (dead-lettered).

Guarantee: after `advance_event_time(settings, until)`, every impression at or before
`until` that reached the job on time comes out. Each impression passes a chain of temporal
joins. When the inputs fall idle, a join further down can take the new watermark from its
other input before the join above hands it the impression; the impression then waits there
for the NEXT watermark. So once the job's watermark has reached `until` everywhere, clock
records 1 ms and (a few seconds later) 2 ms later move it twice more (a background thread
watches the JobManager's REST API for that; with no reachable cluster it sends after a
pause). The
clock record can also be read while other partitions are still busy and go idle before
them; then their idleness leaves the watermark short of `until`. If the watermark stops
moving short of it, the thread sends the first record again.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

from infra.config import Settings
from infra.flink_cluster import FlinkError, list_jobs, request
from infra.topics import ensure_topics
from streams.kafka_io import producer

NUDGE = timedelta(milliseconds=1)
# How long the second clock record waits for the job to reach the first one (a large
# backlog may take this long), and how long an unreachable cluster is retried.
NUDGE_TIMEOUT_S = 1800.0
UNREACHABLE_S = 30.0
_MIN_WATERMARK = -(2**63)


def ensure_clock_topic(settings: Settings) -> None:
    ensure_topics(settings, [settings.flink.clock_topic])


def _send(settings: Settings, tick: datetime) -> None:
    with producer(settings) as prod:
        prod.send(
            settings.flink.clock_topic,
            key=b"clock",
            value=f'{{"event_time": "{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"}}'.encode(),
        ).get(timeout=30)


def job_watermark_ms(settings: Settings) -> int | None:
    """The lowest input watermark over the running job's operators (epoch ms), or None when
    the job is not running. Raises FlinkError when the cluster does not answer."""
    running = [
        j for j in list_jobs(settings) if j.name == settings.flink.job_name and j.state == "RUNNING"
    ]
    if not running:
        return None
    jid = max(running, key=lambda j: j.start_time).jid
    lowest: int | None = None
    for vertex in request(settings, "GET", f"/jobs/{jid}").get("vertices", []):
        marks = request(settings, "GET", f"/jobs/{jid}/vertices/{vertex['id']}/watermarks")
        for mark in marks or []:
            value = int(mark["value"])
            lowest = value if lowest is None else min(lowest, value)
    return _MIN_WATERMARK if lowest is None else lowest


def _nudge(settings: Settings, until: datetime, first: datetime, tick: datetime) -> None:
    """Send `tick` once every operator's watermark reached `until`. While the watermark
    stays short of it and stops moving (the clock record was read while other partitions
    were still active, then went idle before them), send `first` again: read now, it is
    the only active partition."""
    until_ms = int(until.timestamp() * 1000)
    stalled_after = 2 * settings.flink.source_idle_timeout_s + 2.0
    deadline = time.monotonic() + NUDGE_TIMEOUT_S
    unreachable_since: float | None = None
    last: tuple[int | None, float] = (None, time.monotonic())
    while time.monotonic() < deadline:
        try:
            reached = job_watermark_ms(settings)
            unreachable_since = None
        except (FlinkError, OSError, ValueError, KeyError):
            unreachable_since = unreachable_since or time.monotonic()
            if time.monotonic() - unreachable_since > UNREACHABLE_S:
                break
            reached = None
        if reached is not None and reached >= until_ms:
            break
        if reached != last[0]:
            last = (reached, time.monotonic())
        elif reached is not None and time.monotonic() - last[1] > stalled_after:
            _send(settings, first)
            last = (reached, time.monotonic())
        time.sleep(0.5)
    try:
        # Two advances a few seconds apart: a row that reaches a join just as the first
        # one arrives there still sees the second.
        _send(settings, tick)
        time.sleep(settings.flink.source_idle_timeout_s + 1.0)
        _send(settings, tick + NUDGE)
    except Exception:  # noqa: BLE001 - the stack may be gone; the nudge is best effort
        return


def advance_event_time(settings: Settings, until: datetime) -> datetime:
    """Let the job emit every impression at or before `until`.

    Args:
        settings: the stack (broker, clock topic, hold, Flink REST for the nudge).
        until: the event time up to which impressions should come out.

    Returns:
        The clock time sent (`until` plus the hold); the nudges sent later are 1 and 2 ms
        after it, so the watermark ends at `until` + 2 ms.
    """
    f = settings.flink
    tick = until + timedelta(seconds=f.watermark_delay_s + f.allowed_lateness_s)
    ensure_clock_topic(settings)
    _send(settings, tick)
    threading.Thread(
        target=_nudge,
        args=(settings, until, tick, tick + NUDGE),
        name="enrich-clock-nudge",
        daemon=True,
    ).start()
    return tick
