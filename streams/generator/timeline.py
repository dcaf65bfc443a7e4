"""The event stream of a world, in simulated event-time order.

Requests are spread over `sim_days` in proportion to impressions produced (so the run ends
on the last day whatever the page sizes), denser by day than by night. Each request picks a
user, a query (by language, season and trend), candidate pins that exist at that time, ranks
them by hidden relevance plus noise and shows a page. Engagements, saves and pin-side events
wait in one heap keyed by (time, kind, sequence) and are emitted as the clock passes them, so
pin content precedes any impression that can show the pin. Late events (opt-in) are the only
ones emitted after their event time.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

from infra.config import GeneratorSettings
from schemas import BoardSave, Engagement, Event, Impression
from streams.generator import behavior
from streams.generator.boards import BoardBook
from streams.generator.lifecycle import PinLifecycle
from streams.generator.popularity import QueryPopularity
from streams.generator.relevance import Relevance
from streams.generator.world import DAY_S, World, build_world

# At equal times: a pin's content before its caption, board saves, impressions, engagements.
PRIORITY = {
    "pin_content": 0,
    "pin_captions": 1,
    "board_saves": 2,
    "impressions": 3,
    "engagements": 4,
}
# Where a candidate comes from: the query's topic, its family, or anywhere.
FROM_TOPIC = 0.80
FROM_FAMILY = 0.12
# Of the topic's candidates, the share in the query's own language (else any language).
SAME_LANGUAGE = 0.75
# Non-English users sometimes search in English.
ENGLISH_SEARCH = 0.10
# Requests per simulated hour follow the day: 1 - DIURNAL * cos(2 pi * hour / 24).
DIURNAL = 0.6


@dataclass
class _Timed:
    """Pins sorted by creation time, to pick only those that exist at a time."""

    created: list[float] = field(default_factory=list)
    pins: list[int] = field(default_factory=list)

    def live(self, t: float) -> int:
        return bisect_right(self.created, t)


class Timeline:
    """One run of a world. `events()` may be iterated once; afterwards `shown` holds the
    hidden grade of every (query, pin) pair that was shown and `counts` the events per topic."""

    def __init__(self, settings: GeneratorSettings, world: World | None = None) -> None:
        self.settings = settings
        self.world = world or build_world(settings)
        self.relevance = Relevance(self.world)
        self.boards = BoardBook(self.world.seed)
        self.popularity = QueryPopularity(self.world)
        self.shown: dict[tuple[int, int], int] = {}
        self.counts: Counter[str] = Counter()
        self.late: Counter[str] = Counter()
        self._rng = random.Random(f"freshlabel/requests/{settings.seed}")
        # Late delivery draws from its own stream, so turning it on reorders, never changes,
        # the world.
        self._late_rng = random.Random(f"freshlabel/late/{settings.seed}")
        self._heap: list[tuple[float, int, int, bool, Event]] = []
        self._seq = 0
        self._index_pins()

    def _index_pins(self) -> None:
        world = self.world
        self._all = _Timed()
        self._by_topic: dict[int, _Timed] = {}
        self._by_topic_lang: dict[tuple[int, str], _Timed] = {}
        self._by_family: dict[str, _Timed] = {}
        for pin in sorted(world.pins, key=lambda p: (p.created_s, p.index)):
            family = world.topics[pin.topic].family
            for timed in (
                self._all,
                self._by_topic.setdefault(pin.topic, _Timed()),
                self._by_topic_lang.setdefault((pin.topic, pin.lang), _Timed()),
                self._by_family.setdefault(family, _Timed()),
            ):
                timed.created.append(pin.created_s)
                timed.pins.append(pin.index)
        self._user_cumulative: list[float] = []
        total = 0.0
        for user in world.users:
            total += user.activity
            self._user_cumulative.append(total)

    def _push(self, t: float, event: Event, pin_side: bool = False) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, PRIORITY[event.topic], self._seq, pin_side, event))

    def _late_delay(self, event: Event) -> float:
        """Seconds after its event time that this event is delivered (0.0: on time)."""
        share = self.settings.late_share
        if share > 0.0 and self._late_rng.random() < share:
            self.late[event.topic] += 1
            return self.settings.late_by_s * (0.5 + self._late_rng.random())
        return 0.0

    def _clock(self, fraction: float) -> float:
        """Seconds from the start for a fraction of the run, warped to follow the day."""
        seconds = fraction * self.world.span_s
        day, into = divmod(seconds / DAY_S, 1.0)
        warped = into - DIURNAL * math.sin(2 * math.pi * into) / (2 * math.pi)
        return (day + warped) * DAY_S

    def _pick(self, timed: _Timed | None, t: float) -> int | None:
        if timed is None:
            return None
        live = timed.live(t)
        if live == 0:
            return None
        return timed.pins[int(self._rng.random() * live)]

    def _retrieve(self, query_index: int, topic: int, lang: str, t: float) -> int | None:
        """A pin of the query's topic; of two drawn, the one sharing more query terms (the
        way a text retriever favours matches)."""
        rng = self._rng
        timed = None
        if rng.random() < SAME_LANGUAGE:
            timed = self._by_topic_lang.get((topic, lang))
        if timed is None or timed.live(t) == 0:
            timed = self._by_topic.get(topic)
        first = self._pick(timed, t)
        if first is None:
            return None
        second = self._pick(timed, t)
        required = self.world.queries[query_index].required
        pins = self.world.pins
        if second is not None and len(required & pins[second].terms) > len(
            required & pins[first].terms
        ):
            return second
        return first

    def _candidates(self, query_index: int, lang: str, t: float, want: int) -> list[int]:
        world, rng = self.world, self._rng
        topic = world.topics[world.queries[query_index].topic]
        picked: dict[int, None] = {}
        for _ in range(want * 3):
            if len(picked) >= want:
                break
            r = rng.random()
            pin = None
            if r < FROM_TOPIC:
                pin = self._retrieve(query_index, topic.index, lang, t)
            if pin is None and r < FROM_TOPIC + FROM_FAMILY:
                pin = self._pick(self._by_family.get(topic.family), t)
            if pin is None:
                pin = self._pick(self._all, t)
            if pin is not None:
                picked[pin] = None
        return list(picked)

    def events(self) -> Iterator[Event]:
        settings, world, rng = self.settings, self.world, self._rng
        if world.start.tzinfo is None:
            raise ValueError(
                f"generator.start={world.start.isoformat()} has no timezone; "
                "give one, e.g. 2026-10-01T00:00:00Z"
            )
        for t, event in PinLifecycle(world, self.boards).events():
            self._push(t, event, pin_side=True)
        heap, users, queries, pins = self._heap, world.users, world.queries, world.pins
        total = settings.impressions
        seed = settings.seed
        emitted = 0
        empty = 0
        request_no = 0
        t = 0.0
        while emitted < total:
            page = rng.randint(max(1, settings.page_size // 2), settings.page_size)
            page = min(page, total - emitted)
            t = self._clock((emitted + rng.random() * page) / total)
            while heap and heap[0][0] <= t:
                yield self._emit(heapq.heappop(heap)[4])
            user = users[
                bisect_right(self._user_cumulative, rng.random() * self._user_cumulative[-1])
            ]
            lang = user.lang
            if lang != "en" and rng.random() < ENGLISH_SEARCH:
                lang = "en"
            query_index = self.popularity.pick(lang, t, rng)
            if query_index is None:
                query_index = self.popularity.pick("en", t, rng)
            if query_index is None:
                empty = self._nothing_to_show(empty)
                continue
            candidates = self._candidates(query_index, lang, t, 2 * page + 2)
            graded = [(p, self.relevance.grade(query_index, p)) for p in candidates]
            shown = behavior.rank(graded, rng)[:page]
            if not shown:
                empty = self._nothing_to_show(empty)
                continue
            empty = 0
            request_no += 1
            query = queries[query_index].text
            at = world.at(t)
            for position, (pin_index, grade) in enumerate(shown, start=1):
                self.shown.setdefault((query_index, pin_index), grade)
                impression_id = f"i{seed}-{emitted:08d}"
                emitted += 1
                pin_id = pins[pin_index].pin_id
                impression = Impression(
                    impression_id=impression_id,
                    request_id=f"r{seed}-{request_no:07d}",
                    user_id=user.user_id,
                    query=query,
                    pin_id=pin_id,
                    position=position,
                    country=user.country,
                    locale=user.locale,
                    event_time=at,
                )
                late_by = self._late_delay(impression)
                if late_by:
                    self._push(t + late_by, impression)
                else:
                    yield self._emit(impression)
                for action, after in behavior.engagements(grade, position, rng):
                    t_action = t + after
                    self._schedule(
                        t_action,
                        Engagement(
                            impression_id=impression_id,
                            query=query,
                            pin_id=pin_id,
                            action=action,
                            event_time=at + timedelta(seconds=after),
                        ),
                    )
                    if action == "save":
                        board = self.boards.board_for(user, world.topics[pins[pin_index].topic])
                        self._schedule(
                            t_action + 1.0,
                            BoardSave(
                                pin_id=pin_id,
                                board_id=board.board_id,
                                board_title=board.title,
                                user_id=user.user_id,
                                event_time=at + timedelta(seconds=after + 1.0),
                            ),
                        )
        # What follows from shown impressions is emitted; pin-side events after the last
        # request belong to a future the run did not reach.
        while heap:
            t_next, _, _, pin_side, event = heapq.heappop(heap)
            if pin_side and t_next > t:
                continue
            yield self._emit(event)

    @staticmethod
    def _nothing_to_show(empty: int) -> int:
        if empty >= 1000:
            raise RuntimeError(
                "1000 requests in a row found no query or no pin to show; the world is too "
                "small: raise generator.pins (and generator.users) or check generator.start"
            )
        return empty + 1

    def _schedule(self, t: float, event: Event) -> None:
        self._push(t + self._late_delay(event), event)

    def _emit(self, event: Event) -> Event:
        self.counts[event.topic] += 1
        return event
