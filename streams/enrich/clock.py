"""Move the enrichment job's event-time clock forward at the end of a finite replay.

The job emits an impression only once the watermark (newest event time minus
watermark_delay_s + allowed_lateness_s) has passed it, so the last impressions of a finite
replay would wait for newer events forever. `advance_event_time(settings, until)` writes a
clock mark, a record carrying only the topic's event-time field set to `until` plus the hold
(key `clock`), into EVERY partition of every topic the job reads (the five event topics and
`flink.clock_topic`). A mark is not a valid event of any kind (no ids), so the job counts,
joins and dead-letters nothing for it; it only moves its partition's watermark. Once the job
has read the marks, every partition's watermark is at `until` and so is the job's: no
partition has to be declared idle for the clock to move. That is what makes the flush
deterministic. Idleness (flink.source_idle_timeout_s) is wall-clock time: on a starved
machine a partition whose records wait in a slow fetch can be taken for idle, and after
that, a burst read partition by partition turns the others' records late, which in a
replay compressed ~10^4-fold in time is hours of event time. Anything that arrives later with
an older event time is late (dead-lettered), as in a live stream.

Guarantee: after `advance_event_time(settings, until)`, every impression at or before
`until` that reached the job on time comes out. Each impression passes a chain of temporal
joins, and a join further down can take the new watermark from its other input before the
join above hands it the impression; the impression then waits there for the NEXT
watermark. So once the job's watermark has reached `until` everywhere, marks 1 ms and (a
few seconds later) 2 ms later move it twice more (a background thread watches the
JobManager's REST API for that; with no reachable cluster it sends after a pause).

Marks belong to replays (tests, the demo, benchmarks, a backfill's end): a live stream's
watermark moves with its data. Other readers of the event topics see a mark as an invalid
record of the topic; the shared decode step dead-letters it as such.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

from infra.config import Settings
from infra.flink_cluster import FlinkError, list_jobs, request
from infra.kafka_io import producer
from infra.topics import ensure_topics
from streams.enrich.sql import SOURCES, input_topics

NUDGE = timedelta(milliseconds=1)
# The key of every clock mark (compacted topics keep the newest mark of each partition).
MARK_KEY = b"clock"
# How long the nudges wait for the job to reach `until` (a large backlog may take this
# long), how long an unreachable cluster is retried, and the pause between the two nudges.
NUDGE_TIMEOUT_S = 1800.0
UNREACHABLE_S = 30.0
NUDGE_GAP_S = 3.0
_MIN_WATERMARK = -(2**63)


def ensure_clock_topic(settings: Settings) -> None:
    ensure_topics(settings, [settings.flink.clock_topic])


def mark_value(topic: str, tick: datetime) -> bytes:
    """The clock mark for `topic`: its event-time field (`event_time` on the clock topic)
    set to `tick`, in the producers' format, and nothing else."""
    field = SOURCES.get(topic, "event_time")
    return json.dumps({field: f"{tick.astimezone(UTC):%Y-%m-%dT%H:%M:%S.%fZ}"}).encode()


def send_marks(settings: Settings, tick: datetime) -> None:
    """Write a clock mark at `tick` into every partition of every topic the job reads (they
    exist: `advance_event_time` made sure), each acknowledged."""
    topics = input_topics(settings)
    with producer(settings) as prod:
        futures = []
        for topic in topics:
            partitions = prod.partitions_for(topic) or {0}
            value = mark_value(topic, tick)
            futures += [
                prod.send(topic, key=MARK_KEY, value=value, partition=p) for p in sorted(partitions)
            ]
        for future in futures:
            future.get(timeout=30)


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


def _nudge(settings: Settings, until: datetime, tick: datetime) -> None:
    """Send marks at `tick` and `tick` + 1 ms once every operator's watermark reached
    `until` (or the cluster stayed unreachable, or the wait timed out)."""
    until_ms = int(until.timestamp() * 1000)
    deadline = time.monotonic() + NUDGE_TIMEOUT_S
    unreachable_since: float | None = None
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
        time.sleep(0.5)
    try:
        # Two advances a few seconds apart: a row that reaches a join just as the first
        # one arrives there still sees the second.
        send_marks(settings, tick)
        time.sleep(NUDGE_GAP_S)
        send_marks(settings, tick + NUDGE)
    except Exception:  # noqa: BLE001 - the stack may be gone; the nudge is best effort
        return


def advance_event_time(settings: Settings, until: datetime) -> datetime:
    """Let the job emit every impression at or before `until`.

    Args:
        settings: the stack (broker, topics, hold, Flink REST for the nudge).
        until: the event time up to which impressions should come out.

    Returns:
        The mark time sent (`until` plus the hold); the nudges sent later are 1 and 2 ms
        after it, so the watermark ends at `until` + 2 ms.
    """
    f = settings.flink
    tick = until + timedelta(seconds=f.watermark_delay_s + f.allowed_lateness_s)
    # Once here, not per mark: the nudges write into the same partitions.
    ensure_topics(settings, input_topics(settings))
    send_marks(settings, tick)
    threading.Thread(
        target=_nudge,
        args=(settings, until, tick + NUDGE),
        name="enrich-clock-nudge",
        daemon=True,
    ).start()
    return tick
