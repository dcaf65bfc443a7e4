"""Ground truth of a generated world on disk, and the reader API for it.

<truth_dir>/
  world.json            seed, settings, counts per topic, sizes; written last (complete run)
  relevance.parquet     query, pin_id, grade (1..4) for every pair that was shown
  queries.parquet       every query: language, topic, family, season, trend, concepts, weight
  pins.parquet          every pin: topic, family, language, concepts, low_quality, created_at
  events/<topic>.parquet  every produced event, all model fields, rows in production order

Row order of an event file is the order the events were produced, so anyone can replay the
stream and recompute point-in-time features.
"""

from __future__ import annotations

import json
import shutil
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import AwareDatetime, BaseModel

from infra.config import EVENT_TOPICS, Settings
from schemas.base import Event
from schemas.topics import model_for_topic
from streams.generator.timeline import Timeline

GENERATOR_VERSION = "1"
WORLD_FILE = "world.json"
RELEVANCE_FILE = "relevance.parquet"
QUERIES_FILE = "queries.parquet"
PINS_FILE = "pins.parquet"
EVENTS_DIR = "events"


class WorldInfo(BaseModel):
    generator_version: str
    seed: int
    source: str
    start: datetime
    end: datetime
    settings: dict[str, Any]
    counts: dict[str, int]
    late: dict[str, int]
    topics: int
    queries: int
    pins: int
    users: int
    boards: int
    relevance_pairs: int
    grade_counts: dict[str, int]


def truth_dir(settings: Settings) -> Path:
    return settings.generator.truth_dir or settings.state_dir / "world"


def _arrow_type(annotation: Any) -> pa.DataType:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _arrow_type(inner)
    if origin is typing.Annotated:
        return _arrow_type(typing.get_args(annotation)[0])
    if origin is typing.Literal or annotation is str:
        return pa.string()
    if origin is list:
        return pa.list_(_arrow_type(typing.get_args(annotation)[0]))
    if annotation is int:
        return pa.int64()
    if annotation is float:
        return pa.float64()
    if annotation is bool:
        return pa.bool_()
    if annotation in (datetime, AwareDatetime):
        return pa.timestamp("us", tz="UTC")
    raise TypeError(f"no Arrow type for model field type {annotation!r}; add it to _arrow_type")


def arrow_schema(model: type[Event]) -> pa.Schema:
    hints = typing.get_type_hints(model, include_extras=True)
    return pa.schema(
        [
            pa.field(name, _arrow_type(hints[name]), nullable=not info.is_required())
            for name, info in model.model_fields.items()
        ]
    )


class EventLog:
    """Collects every produced event column by column (cheap enough to run on every event)."""

    def __init__(self) -> None:
        self._fields: dict[str, tuple[str, ...]] = {}
        self._columns: dict[str, dict[str, list[Any]]] = {}

    def observe(self, event: Event) -> None:
        columns = self._columns.get(event.topic)
        if columns is None:
            self._fields[event.topic] = tuple(type(event).model_fields)
            columns = self._columns[event.topic] = {f: [] for f in self._fields[event.topic]}
        for name in self._fields[event.topic]:
            columns[name].append(getattr(event, name))

    def table(self, topic: str) -> pa.Table:
        schema = arrow_schema(model_for_topic(topic))
        columns = self._columns.get(topic) or {name: [] for name in schema.names}
        return pa.Table.from_pydict(columns, schema=schema)


def write_truth(
    directory: Path, timeline: Timeline, log: EventLog, settings_dump: dict[str, Any]
) -> WorldInfo:
    """Write every truth file for a finished run; world.json goes last."""
    world = timeline.world
    directory.mkdir(parents=True, exist_ok=True)
    for name in (WORLD_FILE, RELEVANCE_FILE, QUERIES_FILE, PINS_FILE):
        (directory / name).unlink(missing_ok=True)
    shutil.rmtree(directory / EVENTS_DIR, ignore_errors=True)
    (directory / EVENTS_DIR).mkdir()
    for topic in EVENT_TOPICS:
        pq.write_table(log.table(topic), directory / EVENTS_DIR / f"{topic}.parquet")

    pairs = list(timeline.shown.items())
    relevance = pa.table(
        {
            "query": pa.array([world.queries[q].text for (q, _), _ in pairs], pa.string()),
            "pin_id": pa.array([world.pins[p].pin_id for (_, p), _ in pairs], pa.string()),
            "grade": pa.array([g for _, g in pairs], pa.int8()),
        }
    )
    pq.write_table(relevance, directory / RELEVANCE_FILE)

    topics = world.topics
    queries = pa.table(
        {
            "query": [q.text for q in world.queries],
            "lang": [q.lang for q in world.queries],
            "topic": [topics[q.topic].id for q in world.queries],
            "family": [topics[q.topic].family for q in world.queries],
            "season": [_season(topics[q.topic]) for q in world.queries],
            "emerges_at": pa.array(
                [topics[q.topic].emerges_at for q in world.queries], pa.float64()
            ),
            "source": [q.source for q in world.queries],
            "concepts": pa.array([list(q.concepts) for q in world.queries], pa.list_(pa.string())),
            "extras": pa.array([list(q.extras) for q in world.queries], pa.list_(pa.string())),
            "weight": pa.array([q.weight for q in world.queries], pa.float64()),
        }
    )
    pq.write_table(queries, directory / QUERIES_FILE)

    pins = pa.table(
        {
            "pin_id": [p.pin_id for p in world.pins],
            "topic": [topics[p.topic].id for p in world.pins],
            "family": [topics[p.topic].family for p in world.pins],
            "lang": [p.lang for p in world.pins],
            "concepts": pa.array([list(p.concepts) for p in world.pins], pa.list_(pa.string())),
            "extras": pa.array([list(p.extras) for p in world.pins], pa.list_(pa.string())),
            "low_quality": [p.low_quality for p in world.pins],
            "created_at": pa.array(
                [world.at(p.created_s) for p in world.pins], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    pq.write_table(pins, directory / PINS_FILE)

    grade_counts = {str(g): 0 for g in range(1, 5)}
    for _, grade in pairs:
        grade_counts[str(grade)] += 1
    info = WorldInfo(
        generator_version=GENERATOR_VERSION,
        seed=world.seed,
        source=world.source,
        start=world.start,
        end=world.at(world.span_s),
        settings=settings_dump,
        counts={t: timeline.counts.get(t, 0) for t in EVENT_TOPICS},
        late=dict(timeline.late),
        topics=len(topics),
        queries=len(world.queries),
        pins=len(world.pins),
        users=len(world.users),
        boards=len(timeline.boards),
        relevance_pairs=len(pairs),
        grade_counts=grade_counts,
    )
    (directory / WORLD_FILE).write_text(info.model_dump_json(indent=2) + "\n")
    return info


def _season(topic: Any) -> str | None:
    return topic.season.name if topic.season is not None else None


class Truth:
    """Read a truth directory written by `freshlabel generate`."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        world_file = self.directory / WORLD_FILE
        if not world_file.is_file():
            raise FileNotFoundError(
                f"{world_file} is missing: {self.directory} holds no complete generated world; "
                "run `freshlabel generate` (it writes world.json last)"
            )
        self.info = WorldInfo.model_validate(json.loads(world_file.read_text()))

    def relevance(self) -> pa.Table:
        return pq.read_table(self.directory / RELEVANCE_FILE)

    def grades(self) -> dict[tuple[str, str], int]:
        table = self.relevance()
        return dict(
            zip(
                zip(table["query"].to_pylist(), table["pin_id"].to_pylist(), strict=True),
                table["grade"].to_pylist(),
                strict=True,
            )
        )

    def events(self, topic: str) -> pa.Table:
        path = self.directory / EVENTS_DIR / f"{topic}.parquet"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing; event topics are {', '.join(EVENT_TOPICS)}"
            )
        return pq.read_table(path)

    def queries(self) -> pa.Table:
        return pq.read_table(self.directory / QUERIES_FILE)

    def pins(self) -> pa.Table:
        return pq.read_table(self.directory / PINS_FILE)


def load_truth(directory: Path) -> Truth:
    return Truth(directory)
