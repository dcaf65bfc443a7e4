"""The catalog of a simulated world: topics, queries (Zipf popularity), users and pins.

Built once from the seed; nothing here depends on time except when each pin appears.
Built-in topics exist in five languages. With a WANDS query file, every WANDS query class
becomes an English topic whose queries are the real query texts, and the built-in evergreen
topics stop having English queries (their seasonal and trending ones keep them: WANDS has
no notion of time).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from infra.config import GeneratorSettings
from streams.generator.query_log import read_query_log
from streams.generator.text import query_text
from streams.generator.vocabulary import (
    CONCEPTS,
    ENGLISH_ALIASES,
    EXCLUSIVE_KINDS,
    INCOMPATIBLE,
    LANGS,
    MARKETS,
    PIN_LANG_WEIGHTS,
    SEASONS,
    STOPWORDS,
    TOPICS,
    WANDS_CONCEPTS,
    Season,
    TopicSpec,
)

DAY_S = 86_400.0
# Pins that exist before the simulated span starts (the catalog is not empty on day 1).
BACKFILL_DAYS = 21
# Share of evergreen pins created before the start; the rest appear during the run.
BACKFILL_SHARE = 0.7
LOW_QUALITY_SHARE = 0.08
ZIPF_EXPONENT = 1.0
# Seasons with a lower off-season floor than this are holidays, not a mild lean.
STRONG_SEASON_FLOOR = 0.2
# Head-noun queries ("sofa") tend to rank high in popularity.
HEAD_RANK_BOOST = 0.5
_TOKEN = re.compile(r"[a-z0-9][a-z0-9'\-]*")


@dataclass(slots=True)
class Topic:
    index: int
    id: str
    family: str
    # Title-form head noun per language the topic has pins and queries in.
    nouns: dict[str, str]
    concepts: tuple[str, ...]
    # English-only terms (from real queries) that are not concepts: "salon", "dinosaur".
    extras: tuple[str, ...]
    season: Season | None
    emerges_at: float | None
    source: str


@dataclass(slots=True)
class Query:
    index: int
    text: str
    lang: str
    topic: int
    concepts: tuple[str, ...]
    extras: tuple[str, ...]
    # Zipf popularity within its language, before seasons and trends.
    weight: float
    source: str
    required: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)
class Pin:
    index: int
    pin_id: str
    topic: int
    lang: str
    concepts: tuple[str, ...]
    extras: tuple[str, ...]
    low_quality: bool
    # Seconds from the simulated start (negative: created before it).
    created_s: float
    terms: frozenset[str] = field(default_factory=frozenset)


@dataclass(slots=True)
class User:
    index: int
    user_id: str
    country: str
    locale: str
    lang: str
    activity: float


@dataclass
class World:
    seed: int
    start: datetime
    span_s: float
    source: str
    topics: list[Topic]
    queries: list[Query]
    pins: list[Pin]
    users: list[User]
    query_by_text: dict[str, int]
    pin_by_id: dict[str, int]

    def at(self, seconds: float) -> datetime:
        return self.start + timedelta(seconds=seconds)


def build_world(settings: GeneratorSettings) -> World:
    rng = random.Random(f"freshlabel/world/{settings.seed}")
    queries_file = settings.queries_file
    use_log = queries_file is not None and Path(queries_file).is_file()
    topics = _builtin_topics()
    queries: list[Query] = []
    by_text: dict[str, int] = {}
    if use_log:
        assert queries_file is not None
        _add_logged(Path(queries_file), topics, queries, by_text)
    for topic in topics:
        if topic.source == "builtin":
            english = not use_log or _time_bound(topic)
            _add_builtin_queries(topic, _spec(topic.id), english, queries, by_text, rng)
    _assign_zipf_weights(queries, rng)
    span_s = settings.sim_days * DAY_S
    users = _users(settings, rng)
    pins = _pins(settings, topics, queries, span_s, rng)
    return World(
        seed=settings.seed,
        start=settings.start,
        span_s=span_s,
        source="wands" if use_log else "builtin",
        topics=topics,
        queries=queries,
        pins=pins,
        users=users,
        query_by_text=by_text,
        pin_by_id={p.pin_id: p.index for p in pins},
    )


def _time_bound(topic: Topic) -> bool:
    """A holiday or a trend: popular only part of the time (a mild winter lean is not)."""
    strong_season = topic.season is not None and topic.season.floor < STRONG_SEASON_FLOOR
    return strong_season or topic.emerges_at is not None


def _spec(topic_id: str) -> TopicSpec:
    return next(s for s in TOPICS if s.id == topic_id)


def _builtin_topics() -> list[Topic]:
    return [
        Topic(
            index=n,
            id=spec.id,
            family=spec.family,
            nouns={lang: spec.noun(lang) for lang in LANGS},
            concepts=spec.concepts,
            extras=(),
            season=SEASONS[spec.season] if spec.season else None,
            emerges_at=spec.emerges_at,
            source="builtin",
        )
        for n, spec in enumerate(TOPICS)
    ]


def _intents(concepts: tuple[str, ...], rng: random.Random) -> list[tuple[str, ...]]:
    """What people search for in a topic: the head noun, one attribute, or two."""
    intents: list[tuple[str, ...]] = [()]
    singles = rng.sample(concepts, k=min(6, len(concepts)))
    intents.extend((c,) for c in singles)
    pairs: dict[tuple[str, ...], None] = {}
    for _ in range(20):
        if len(pairs) == 4 or len(concepts) < 2:
            break
        a, b = rng.sample(concepts, k=2)
        kind_a, kind_b = CONCEPTS[a].kind, CONCEPTS[b].kind
        same_kind = kind_a == kind_b and kind_a in EXCLUSIVE_KINDS
        if same_kind or frozenset((a, b)) in INCOMPATIBLE:
            continue
        pairs[tuple(sorted((a, b)))] = None
    intents.extend(pairs)
    return intents


def _add_query(
    queries: list[Query],
    by_text: dict[str, int],
    text: str,
    lang: str,
    topic: int,
    concepts: tuple[str, ...],
    extras: tuple[str, ...],
    source: str,
) -> None:
    # Two languages can spell a query alike ("sofa"); the first one keeps it.
    if text in by_text:
        return
    by_text[text] = len(queries)
    queries.append(
        Query(
            index=len(queries),
            text=text,
            lang=lang,
            topic=topic,
            concepts=concepts,
            extras=extras,
            weight=0.0,
            source=source,
            required=frozenset(concepts) | frozenset(extras),
        )
    )


def _add_builtin_queries(
    topic: Topic,
    spec: TopicSpec,
    english: bool,
    queries: list[Query],
    by_text: dict[str, int],
    rng: random.Random,
) -> None:
    intents = _intents(topic.concepts, rng)
    for lang in LANGS:
        if lang == "en" and not english:
            continue
        for intent in intents:
            text = query_text(topic.nouns[lang], intent, lang, rng)
            _add_query(queries, by_text, text, lang, topic.index, intent, (), "builtin")
        if lang == "en":
            for synonym in spec.synonyms:
                for intent in intents[:2]:
                    text = query_text(synonym, intent, lang, rng)
                    _add_query(queries, by_text, text, lang, topic.index, intent, (), "builtin")


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _add_logged(
    path: Path, topics: list[Topic], queries: list[Query], by_text: dict[str, int]
) -> None:
    english_concepts = {c.word("en"): c.id for c in CONCEPTS.values()} | ENGLISH_ALIASES
    by_class: dict[str, Topic] = {}
    extras_of: dict[str, dict[str, None]] = {}
    concepts_of: dict[str, dict[str, None]] = {}
    for logged in read_query_log(path):
        topic = by_class.get(logged.query_class)
        if topic is None:
            slug = re.sub(r"[^a-z0-9]+", "_", logged.query_class.lower()).strip("_")
            topic = Topic(
                index=len(topics),
                id=f"wands:{slug}",
                family="home",
                nouns={"en": logged.query_class.lower()},
                concepts=(),
                extras=(),
                season=None,
                emerges_at=None,
                source="wands",
            )
            topics.append(topic)
            by_class[logged.query_class] = topic
            extras_of[topic.id] = {}
            concepts_of[topic.id] = {}
        noun_words = {_singular(w) for w in _TOKEN.findall(topic.nouns["en"])}
        concepts: dict[str, None] = {}
        extras: dict[str, None] = {}
        for token in _TOKEN.findall(logged.text):
            if token in STOPWORDS or _singular(token) in noun_words:
                continue
            concept = english_concepts.get(token)
            if concept is not None:
                concepts[concept] = None
            else:
                extras[token] = None
        extras_of[topic.id].update(extras)
        concepts_of[topic.id].update(concepts)
        _add_query(
            queries,
            by_text,
            logged.text,
            "en",
            topic.index,
            tuple(concepts),
            tuple(extras),
            "wands",
        )
    for topic in by_class.values():
        named = tuple(concepts_of[topic.id])
        topic.concepts = named + tuple(c for c in WANDS_CONCEPTS if c not in named)
        topic.extras = tuple(extras_of[topic.id])


def _assign_zipf_weights(queries: list[Query], rng: random.Random) -> None:
    """Rank each language's queries at random (head queries favoured), then give rank r the
    weight 1 / (r + 1) ** ZIPF_EXPONENT: a long tail of rare queries. Seasons and trends
    multiply these weights over time (popularity.py)."""
    for lang in LANGS:
        pool = [q for q in queries if q.lang == lang]
        keys: list[tuple[float, int]] = []
        for q in pool:
            key = rng.random()
            if not q.required:
                key *= HEAD_RANK_BOOST
            keys.append((key, q.index))
        for rank, (_, index) in enumerate(sorted(keys)):
            queries[index].weight = 1.0 / (rank + 1) ** ZIPF_EXPONENT


def _users(settings: GeneratorSettings, rng: random.Random) -> list[User]:
    weights = [m.weight for m in MARKETS]
    users: list[User] = []
    for n in range(settings.users):
        market = rng.choices(MARKETS, weights=weights)[0]
        users.append(
            User(
                index=n,
                user_id=f"u{settings.seed}-{n:06d}",
                country=market.country,
                locale=market.locale,
                lang=market.lang,
                # A few heavy users and many occasional ones.
                activity=rng.lognormvariate(0.0, 1.0),
            )
        )
    return users


def _allocate(total: int, demand: list[float]) -> list[int]:
    """Split `total` pins over topics in proportion to demand, at least one each if possible."""
    n = len(demand)
    base = [1] * n if total >= n else [0] * n
    rest = total - sum(base)
    whole = sum(demand)
    quotas = [rest * d / whole for d in demand]
    counts = [b + int(q) for b, q in zip(base, quotas, strict=True)]
    by_remainder = sorted(range(n), key=lambda i: (-(quotas[i] - int(quotas[i])), i))
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _pins(
    settings: GeneratorSettings,
    topics: list[Topic],
    queries: list[Query],
    span_s: float,
    rng: random.Random,
) -> list[Pin]:
    of_topic: list[list[Query]] = [[] for _ in topics]
    for q in queries:
        of_topic[q.topic].append(q)
    # Demand: popularity of the topic's queries, plus a floor so every topic has content.
    demand = [sum(q.weight for q in qs) + 0.05 for qs in of_topic]
    counts = _allocate(settings.pins, demand)
    langs = [lang for lang, _ in PIN_LANG_WEIGHTS]
    lang_weights = [w for _, w in PIN_LANG_WEIGHTS]
    pins: list[Pin] = []
    for topic, count in zip(topics, counts, strict=True):
        topic_queries = of_topic[topic.index]
        query_weights = [q.weight for q in topic_queries]
        for _ in range(count):
            lang = rng.choices(langs, lang_weights)[0] if len(topic.nouns) > 1 else "en"
            # Content is made for what people search: each pin starts from one query's intent.
            concepts: list[str] = []
            extras: list[str] = []
            if topic_queries:
                seed_query = rng.choices(topic_queries, query_weights)[0]
                concepts = list(seed_query.concepts)
                extras = list(seed_query.extras) if lang == "en" else []
            _add_attributes(topic, concepts, extras, lang, rng)
            pins.append(_pin(settings.seed, len(pins), topic, lang, concepts, extras, span_s, rng))
    _ensure_one_before_start(pins, topics)
    return pins


def _add_attributes(
    topic: Topic, concepts: list[str], extras: list[str], lang: str, rng: random.Random
) -> None:
    taken_kinds = {CONCEPTS[c].kind for c in concepts}
    for _ in range(rng.choice((0, 1, 1, 2))):
        free = [
            c
            for c in topic.concepts
            if c not in concepts
            and not (CONCEPTS[c].kind in EXCLUSIVE_KINDS and CONCEPTS[c].kind in taken_kinds)
            and not any(frozenset((c, other)) in INCOMPATIBLE for other in concepts)
        ]
        if not free:
            break
        pick = rng.choice(free)
        concepts.append(pick)
        taken_kinds.add(CONCEPTS[pick].kind)
    if lang == "en" and topic.extras and rng.random() < 0.3:
        extra = rng.choice(topic.extras)
        if extra not in extras:
            extras.append(extra)


def _pin(
    seed: int,
    index: int,
    topic: Topic,
    lang: str,
    concepts: list[str],
    extras: list[str],
    span_s: float,
    rng: random.Random,
) -> Pin:
    if topic.emerges_at is not None:
        created = rng.uniform(topic.emerges_at * span_s, span_s)
    elif rng.random() < BACKFILL_SHARE:
        created = -rng.uniform(0.0, BACKFILL_DAYS * DAY_S)
    else:
        created = rng.uniform(0.0, span_s)
    return Pin(
        index=index,
        pin_id=f"p{seed}-{index:06d}",
        topic=topic.index,
        lang=lang,
        concepts=tuple(concepts),
        extras=tuple(extras),
        low_quality=rng.random() < LOW_QUALITY_SHARE,
        created_s=created,
        terms=frozenset(concepts) | frozenset(extras),
    )


def _ensure_one_before_start(pins: list[Pin], topics: list[Topic]) -> None:
    """Requests need some pin to show from the first second on."""
    if any(p.created_s < 0 for p in pins):
        return
    for pin in pins:
        if topics[pin.topic].emerges_at is None:
            pin.created_s = -3600.0
            return
