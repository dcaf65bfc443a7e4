"""Which query a request asks, by language and simulated time: Zipf weights times seasons
and trends, recomputed once per epoch of simulated time."""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from datetime import UTC, datetime
from itertools import accumulate

from streams.generator.vocabulary import LANGS, Season
from streams.generator.world import DAY_S, STRONG_SEASON_FLOOR, Topic, World

EPOCH_S = 6 * 3600.0
# A new trend grows from nothing to full popularity over this long.
TREND_RAMP_S = 7 * DAY_S
# At their peak a holiday's queries are this many times as popular as an evergreen query of
# the same Zipf rank (and far less off-season); likewise a trend once grown.
HOLIDAY_PEAK_BOOST = 6.0
TREND_BOOST = 3.0


def season_multiplier(season: Season, when: datetime) -> float:
    """floor far from the yearly peak, 1.0 on it; asymmetric (holidays end abruptly)."""
    best = 0.0
    for year in (when.year - 1, when.year, when.year + 1):
        peak = datetime(year, season.month, season.day, tzinfo=UTC)
        days = (when - peak).total_seconds() / DAY_S
        width = season.rise_days if days < 0 else season.fall_days
        best = max(best, math.exp(-0.5 * (days / width) ** 2))
    return season.floor + (1.0 - season.floor) * best


def topic_multiplier(topic: Topic, world: World, t: float) -> float:
    factor = 1.0
    if topic.season is not None:
        factor *= season_multiplier(topic.season, world.at(t))
        if topic.season.floor < STRONG_SEASON_FLOOR:
            factor *= HOLIDAY_PEAK_BOOST
    if topic.emerges_at is not None:
        born = topic.emerges_at * world.span_s
        factor *= 0.0 if t < born else TREND_BOOST * min(1.0, (t - born) / TREND_RAMP_S)
    return factor


class QueryPopularity:
    def __init__(self, world: World) -> None:
        self.world = world
        self._pools: dict[str, list[int]] = {lang: [] for lang in LANGS}
        for q in world.queries:
            self._pools[q.lang].append(q.index)
        # Per language: each pooled query's Zipf weight and topic (what a refresh reads).
        self._weights = {
            lang: [world.queries[i].weight for i in pool] for lang, pool in self._pools.items()
        }
        self._topics = {
            lang: [world.queries[i].topic for i in pool] for lang, pool in self._pools.items()
        }
        self._epoch = -1
        self._cumulative: dict[str, tuple[list[float], float]] = {}

    def _refresh(self, epoch: int) -> None:
        t = (epoch + 0.5) * EPOCH_S
        factors = [topic_multiplier(topic, self.world, t) for topic in self.world.topics]
        self._cumulative = {}
        for lang, weights in self._weights.items():
            topics = self._topics[lang]
            scaled = [w * factors[k] for w, k in zip(weights, topics, strict=True)]
            cumulative = list(accumulate(scaled))
            self._cumulative[lang] = (cumulative, cumulative[-1] if cumulative else 0.0)
        self._epoch = epoch

    def pick(self, lang: str, t: float, rng: random.Random) -> int | None:
        """A query index of `lang` asked at time t; None if that language has none live."""
        epoch = int(t // EPOCH_S)
        if epoch != self._epoch:
            self._refresh(epoch)
        cumulative, total = self._cumulative[lang]
        if total <= 0.0:
            return None
        pool = self._pools[lang]
        return pool[min(bisect_right(cumulative, rng.random() * total), len(pool) - 1)]
