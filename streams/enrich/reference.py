"""The point-in-time semantics of the enrichment job, in plain Python.

Given the event log (the five event types), `expected` computes for every impression the
features it must carry; `pit_violations` compares enriched rows against that truth. Tests
and the demo use it to count rows whose features disagree with the pin *as it was* at the
impression's time. The rules (docs/enrichment.md states them for users):

- Times are compared at millisecond precision (Flink's event-time precision): an event
  "at or before t" has floor(time to ms) <= floor(t to ms).
- Content and caption: the latest version of the pin at or before t, by event time (a
  version that arrived out of order still counts from its own time); at equal times the
  later arrival wins. However old a version is, it counts: the job bounds versions only
  ahead of the wall clock, because their compacted topics keep a pin's latest version
  forever (events the job refuses, out of range or late, are the caller's to leave out).
- A late content or caption version (its time at or behind the watermark W it met when
  the job read it) is not lost: it counts, from its own time, only for impressions after W
  (t > W). Impressions at or before W were enriched without it; its dead letter names W
  and that range. W is a fact of the run, like arrival order, so the caller passes the late
  versions with their W (`late_versions(dead_letters)` reads them from the DLQ); the rule
  that applies them is here.
- Board titles / top queries: windows of `size` end on multiples of `slide` since the epoch
  (UTC). As of t the current window is the last one that ended at or before t + 1 ms (its
  last millisecond is at or before t). Saves per board title (engagements per query) in that
  window, most first, ties by title (query) in code-point order, the first K. If the pin had
  none in that window the feature is null; `*_updated_at` is the window's end.
"""

from __future__ import annotations

import json
import math
import re
from bisect import bisect_left, bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from infra.config import FlinkSettings
from schemas import (
    BoardSave,
    Engagement,
    EnrichedImpression,
    Event,
    Impression,
    PinCaption,
    PinContent,
)
from streams.dlq import DeadLetter, Reason

FEATURES = (
    "title",
    "description",
    "link_title",
    "link_description",
    "content_updated_at",
    "caption",
    "caption_updated_at",
    "board_titles",
    "boards_updated_at",
    "top_queries",
    "top_queries_updated_at",
)
_MODELS: dict[str, type[Event]] = {
    m.topic: m for m in (Impression, PinContent, PinCaption, BoardSave, Engagement)
}


class Violation(NamedTuple):
    impression_id: str
    field: str
    expected: Any
    got: Any


class LateVersion(NamedTuple):
    """A content or caption version that met watermark `watermark` at or past its own time:
    it counts only for impressions after `watermark`."""

    event: PinContent | PinCaption
    watermark: datetime


_LATE_DETAIL = re.compile(r" is at or behind the watermark (\S+) ")
LATE_VERSION_TOPICS = ("pin_content", "pin_captions")


def late_versions(dead_letters: Iterable[Any]) -> list[LateVersion]:
    """The late content and caption versions among dead letters of the job (reason
    late_event on pin_content.dlq / pin_captions.dlq), each with the watermark it met.

    Args:
        dead_letters: `DeadLetter`s, their JSON bytes, or kafka-python records of them;
            letters of other topics, reasons or consumers (not `flink:<job>`) are skipped.

    Returns:
        The late versions, in the order given (arrival order when read from the DLQ).

    Raises:
        ValueError: a late version's detail does not name the watermark (not the job's).
    """
    found = []
    for item in dead_letters:
        raw = getattr(item, "value", item)
        letter = item if isinstance(item, DeadLetter) else DeadLetter.model_validate_json(raw)
        if (
            letter.reason != Reason.LATE_EVENT
            or letter.source_topic not in LATE_VERSION_TOPICS
            or not letter.consumer.startswith("flink:")
        ):
            continue
        match = _LATE_DETAIL.search(letter.detail)
        if match is None or letter.value is None:
            raise ValueError(
                f"dead letter {letter.source_topic}/{letter.partition}/{letter.offset} names no "
                "watermark; pass only letters the enrichment job wrote"
            )
        model = _MODELS[letter.source_topic]
        event = model.model_validate_json(letter.value)
        assert isinstance(event, PinContent | PinCaption)
        watermark = datetime.fromisoformat(match.group(1).replace("Z", "+00:00"))
        found.append(LateVersion(event, watermark))
    return found


def millis(value: datetime) -> int:
    """Epoch milliseconds, truncated like Flink's CAST to TIMESTAMP_LTZ(3)."""
    delta = value.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400_000_000 + delta.seconds * 1_000_000 + delta.microseconds) // 1000


def from_millis(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True)
class WindowSpec:
    size_ms: int
    slide_ms: int
    k: int

    def current_end(self, t_ms: int) -> int:
        """End of the last window whose final millisecond is at or before t."""
        return ((t_ms + 1) // self.slide_ms) * self.slide_ms


def window_specs(settings: FlinkSettings | None = None) -> tuple[WindowSpec, WindowSpec]:
    """(boards, queries) windows as the job is configured."""
    f = settings or FlinkSettings()
    boards = WindowSpec(
        f.top_boards_window_days * 86_400_000, f.top_boards_slide_hours * 3_600_000, f.top_boards_k
    )
    queries = WindowSpec(
        f.top_queries_window_days * 86_400_000,
        f.top_queries_slide_hours * 3_600_000,
        f.top_queries_k,
    )
    return boards, queries


@dataclass
class _Timeline:
    """Events of one pin sorted by time (ms): bisect finds what was known at t."""

    times: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)

    def build(self, items: list[tuple[int, Any]]) -> None:
        items.sort(key=lambda item: item[0])  # stable: equal times keep arrival order
        self.times = [t for t, _ in items]
        self.values = [v for _, v in items]

    def latest_at(self, t_ms: int) -> Any:
        i = bisect_right(self.times, t_ms)
        return self.values[i - 1] if i else None

    def between(self, start_ms: int, end_ms: int) -> list[Any]:
        return self.values[bisect_left(self.times, start_ms) : bisect_left(self.times, end_ms)]


class _Late(NamedTuple):
    time_ms: int
    watermark_ms: int
    arrival: int
    event: Event


@dataclass
class EventLog:
    """The event log indexed per pin: versions of content and captions (on time, and late
    with the watermark each met), saves, engagements."""

    impressions: dict[str, Impression]
    content: dict[str, _Timeline]
    captions: dict[str, _Timeline]
    saves: dict[str, _Timeline]
    engagements: dict[str, _Timeline]
    late_content: dict[str, list[_Late]] = field(default_factory=dict)
    late_captions: dict[str, list[_Late]] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """A JSON-able value from what Arrow/pandas rows hold (numpy scalars, NaN, NaT, ...)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ in ("NaTType", "NAType"):
        return None
    return value


def _rows(data: Any) -> Iterable[Any]:
    if hasattr(data, "to_pylist"):  # pyarrow.Table / RecordBatch
        return list(data.to_pylist())
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas.DataFrame
        return list(data.to_dict("records"))
    return list(data)


def _as_event(model: type[Event], row: Any) -> Event:
    if isinstance(row, Event):
        return row
    if isinstance(row, bytes | str):
        return model.model_validate_json(row)
    return model.model_validate_json(json.dumps({k: _plain(v) for k, v in dict(row).items()}))


def _by_topic(events: Any) -> dict[str, list[Event]]:
    grouped: dict[str, list[Event]] = defaultdict(list)
    if isinstance(events, Mapping):
        for topic, data in events.items():
            if topic not in _MODELS:
                raise ValueError(f"unknown topic {topic!r}; expected one of {sorted(_MODELS)}")
            grouped[topic] = [_as_event(_MODELS[topic], row) for row in _rows(data)]
        return grouped
    for event in events:
        if not isinstance(event, Event):
            raise TypeError(
                f"{event!r} is not an event model; pass models, or a mapping topic -> rows"
            )
        grouped[event.topic].append(event)
    return grouped


def _versions(events: list[Event]) -> dict[str, _Timeline]:
    """Every version per pin, ordered by time; at equal times in arrival order."""
    items: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for event in events:
        items[str(getattr(event, "pin_id"))].append((millis(event.time), event))  # noqa: B009
    return _timelines(items)


def _timelines(items: dict[str, list[tuple[int, Any]]]) -> dict[str, _Timeline]:
    timelines = {}
    for pin, pin_items in items.items():
        timelines[pin] = _Timeline()
        timelines[pin].build(pin_items)
    return timelines


def _late_index(late: Iterable[LateVersion], topic: str) -> dict[str, list[_Late]]:
    index: dict[str, list[_Late]] = defaultdict(list)
    for arrival, version in enumerate(late):
        if version.event.topic == topic:
            index[version.event.pin_id].append(
                _Late(millis(version.event.time), millis(version.watermark), arrival, version.event)
            )
    return dict(index)


def load_events(events: Any, late: Iterable[LateVersion] = ()) -> EventLog:
    """Index the event log: a list of event models, or a mapping topic -> rows (models,
    dicts, JSON bytes, a pyarrow Table or a pandas DataFrame). List order is arrival order.
    `late` are the late content/caption versions with the watermark each met
    (`late_versions`); one equal to an event of the log is taken out of the on-time ones."""
    grouped = _by_topic(events)
    late = list(late)
    for version in late:
        on_time = grouped.get(version.event.topic, [])
        if version.event in on_time:
            on_time.remove(version.event)
    saves: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for save in grouped.get("board_saves", []):
        assert isinstance(save, BoardSave)
        saves[save.pin_id].append((millis(save.event_time), save.board_title))
    engaged: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for engagement in grouped.get("engagements", []):
        assert isinstance(engagement, Engagement)
        engaged[engagement.pin_id].append((millis(engagement.event_time), engagement.query))
    impressions = {}
    for impression in grouped.get("impressions", []):
        assert isinstance(impression, Impression)
        impressions[impression.impression_id] = impression
    return EventLog(
        impressions=impressions,
        content=_versions(grouped.get("pin_content", [])),
        captions=_versions(grouped.get("pin_captions", [])),
        saves=_timelines(saves),
        engagements=_timelines(engaged),
        late_content=_late_index(late, "pin_content"),
        late_captions=_late_index(late, "pin_captions"),
    )


def _top_k(timeline: _Timeline | None, spec: WindowSpec, t_ms: int) -> tuple[Any, Any]:
    if timeline is None:
        return None, None
    end = spec.current_end(t_ms)
    counts = Counter(timeline.between(end - spec.size_ms, end))
    if not counts:
        return None, None
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked[: spec.k]], from_millis(end)


def _version_at(on_time: _Timeline | None, late: list[_Late] | None, t_ms: int) -> Any:
    """The version in effect at t: the newest by event time of the on-time versions at or
    before t and the late ones at or before t whose watermark lies before t. At equal times
    the later arrival wins, and a late version arrived after every on-time one of its time
    (that one was on time, so the watermark was still behind it)."""
    best = on_time.latest_at(t_ms) if on_time is not None else None
    visible = [v for v in late or () if v.time_ms <= t_ms and v.watermark_ms < t_ms]
    if visible:
        newest = max(visible, key=lambda v: (v.time_ms, v.arrival))
        if best is None or newest.time_ms >= millis(best.time):
            return newest.event
    return best


def features_at(
    log: EventLog, pin_id: str, at: datetime, specs: tuple[WindowSpec, WindowSpec]
) -> dict[str, Any]:
    """Every feature of `pin_id` as of time `at`."""
    t = millis(at)
    out: dict[str, Any] = dict.fromkeys(FEATURES)
    content = _version_at(log.content.get(pin_id), log.late_content.get(pin_id), t)
    if content is not None:
        assert isinstance(content, PinContent)
        out.update(
            title=content.title,
            description=content.description,
            link_title=content.link_title,
            link_description=content.link_description,
            content_updated_at=content.updated_at,
        )
    caption = _version_at(log.captions.get(pin_id), log.late_captions.get(pin_id), t)
    if caption is not None:
        assert isinstance(caption, PinCaption)
        out.update(caption=caption.caption, caption_updated_at=caption.created_at)
    boards, queries = specs
    out["board_titles"], out["boards_updated_at"] = _top_k(log.saves.get(pin_id), boards, t)
    out["top_queries"], out["top_queries_updated_at"] = _top_k(
        log.engagements.get(pin_id), queries, t
    )
    return out


def expected(
    events: Any, settings: FlinkSettings | None = None, late: Iterable[LateVersion] = ()
) -> dict[str, dict[str, Any]]:
    """impression_id -> the features the job must attach to it (`late`: see load_events)."""
    log = events if isinstance(events, EventLog) else load_events(events, late)
    specs = window_specs(settings)
    return {
        iid: features_at(log, imp.pin_id, imp.event_time, specs)
        for iid, imp in log.impressions.items()
    }


def _as_enriched(row: Any) -> EnrichedImpression:
    if isinstance(row, EnrichedImpression):
        return row
    if isinstance(row, bytes | str):
        return EnrichedImpression.model_validate_json(row)
    value = getattr(row, "value", None)  # a kafka-python ConsumerRecord
    if isinstance(value, bytes):
        return EnrichedImpression.model_validate_json(value)
    return EnrichedImpression.model_validate_json(
        json.dumps({k: _plain(v) for k, v in dict(row).items()})
    )


def pit_violations(
    enriched_rows: Iterable[Any],
    events: Any,
    settings: FlinkSettings | None = None,
    late: Iterable[LateVersion] = (),
) -> list[Violation]:
    """(impression_id, field, expected, got) for every feature of every enriched row that
    disagrees with the event log as of the impression's time. An enriched row for an
    impression the log does not hold is reported with field "impression_id". `late`: the
    late content/caption versions with their watermarks (`late_versions(dead_letters)`)."""
    log = events if isinstance(events, EventLog) else load_events(events, late)
    specs = window_specs(settings)
    violations: list[Violation] = []
    for row in enriched_rows:
        enriched = _as_enriched(row)
        impression = log.impressions.get(enriched.impression_id)
        if impression is None:
            violations.append(
                Violation(enriched.impression_id, "impression_id", "in the event log", None)
            )
            continue
        truth = features_at(log, impression.pin_id, impression.event_time, specs)
        for name in FEATURES:
            got = getattr(enriched, name)
            if got != truth[name]:
                violations.append(Violation(enriched.impression_id, name, truth[name], got))
    return violations
