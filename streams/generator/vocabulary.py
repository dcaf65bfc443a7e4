"""The words of the synthetic world: markets, attribute concepts, topics and seasons.

A concept (blue, velvet, vegan, ...) is language-independent: queries and pins carry concept
ids, and each language renders them its own way (a query word, a title phrase before or after
the noun). Hidden relevance is computed on concepts, so the same intent in Spanish and in
English grades the same while a text model still has to read the words to learn it.

The words themselves are data, `vocabulary.yaml` beside this module, read once at import;
this module gives them their types. Order is kept as the file has it: a seeded world draws
from these lists in that order, so the same file and seed give the same world.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def load_data(name: str) -> Any:
    """A data file of the generator (YAML, beside this module), parsed.

    Args:
        name: The file name, e.g. "vocabulary.yaml".

    Returns:
        Its content: mappings keep the file's order.
    """
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(Path(__file__).with_name(name).read_text(encoding="utf-8"), Loader=loader)


_DATA = load_data("vocabulary.yaml")

LANGS: tuple[str, ...] = tuple(_DATA["langs"])


@dataclass(frozen=True)
class Market:
    country: str
    locale: str
    lang: str
    weight: float


# Share of users per market.
MARKETS: tuple[Market, ...] = tuple(Market(*row) for row in _DATA["markets"])

# Language of a new pin of a multilingual topic.
PIN_LANG_WEIGHTS: tuple[tuple[str, float], ...] = tuple(_DATA["pin_lang_weights"].items())

# Kinds a pin has one value of at most: a query for "blue" and a red pin conflict.
EXCLUSIVE_KINDS: frozenset[str] = frozenset(_DATA["exclusive_kinds"])

# Order of attribute phrases in a title ("modern blue velvet armchair").
KIND_ORDER: tuple[str, ...] = tuple(_DATA["kind_order"])

# English spellings met in real query logs that mean a concept ("gray" chair, "wooden" desk).
ENGLISH_ALIASES: dict[str, str] = dict(_DATA["english_aliases"])


@dataclass(frozen=True)
class Concept:
    id: str
    kind: str
    words: dict[str, str]
    # lang -> (title phrase, goes before the noun)
    phrases: dict[str, tuple[str, bool]]

    def word(self, lang: str) -> str:
        return self.words[lang]

    def phrase(self, lang: str) -> tuple[str, bool]:
        return self.phrases[lang]


def _build_concepts(data: dict[str, Any]) -> dict[str, Concept]:
    """Each concept's word per language, and its title phrase: the language's pattern for
    the concept's kind ({w}: the word, {W}: capitalized), unless an override names one."""
    patterns: dict[str, dict[str, list[Any]]] = data["phrase_patterns"]
    overrides: dict[str, dict[str, str]] = data["phrase_overrides"]
    concepts: dict[str, Concept] = {}
    for cid, (kind, *words) in data["concepts"].items():
        by_lang = dict(zip(LANGS, words, strict=True))
        phrases: dict[str, tuple[str, bool]] = {}
        for lang, word in by_lang.items():
            template, before = patterns[lang][kind]
            text = overrides.get(cid, {}).get(
                lang, template.format(w=word, W=word[:1].upper() + word[1:])
            )
            phrases[lang] = (text, before)
        concepts[cid] = Concept(cid, kind, by_lang, phrases)
    return concepts


CONCEPTS: dict[str, Concept] = _build_concepts(_DATA)


@dataclass(frozen=True)
class Season:
    """Popularity bump around a yearly date: rises over `rise_days`, falls over `fall_days`."""

    name: str
    month: int
    day: int
    rise_days: float
    fall_days: float
    # Multiplier far from the peak (evergreen topics with a mild lean use a high floor).
    floor: float


SEASONS: dict[str, Season] = {
    name: Season(name, **fields) for name, fields in _DATA["seasons"].items()
}


@dataclass(frozen=True)
class TopicSpec:
    """A built-in topic: its head noun per language (title form) and the concepts it takes."""

    id: str
    family: str
    # en, es, fr, de, ja
    nouns: tuple[str, str, str, str, str]
    concepts: tuple[str, ...]
    season: str | None = None
    # Fraction of the simulated span after which the topic exists (a new trend), else None.
    emerges_at: float | None = None
    # Extra English head nouns used by some queries ("couch" for sofa).
    synonyms: tuple[str, ...] = field(default=())

    def noun(self, lang: str) -> str:
        return self.nouns[LANGS.index(lang)]


def _topic(spec: dict[str, Any]) -> TopicSpec:
    # A concept group (a YAML alias of `concept_groups`) stands for its items, in place.
    concepts: list[str] = []
    for item in spec["concepts"]:
        concepts.extend(item if isinstance(item, list) else [item])
    nouns = tuple(spec["nouns"])
    if len(nouns) != len(LANGS):
        raise ValueError(
            f"vocabulary.yaml: topic {spec['id']!r} has {len(nouns)} nouns; give one per "
            f"language ({', '.join(LANGS)})"
        )
    return TopicSpec(
        id=spec["id"],
        family=spec["family"],
        nouns=nouns,  # type: ignore[arg-type]  # checked above
        concepts=tuple(concepts),
        season=spec.get("season"),
        emerges_at=spec.get("emerges_at"),
        synonyms=tuple(spec.get("synonyms", ())),
    )


TOPICS: tuple[TopicSpec, ...] = tuple(_topic(spec) for spec in _DATA["topics"])

# Concepts that contradict each other in one intent ("vegan chicken salad").
INCOMPATIBLE: frozenset[frozenset[str]] = frozenset(
    frozenset(pair) for pair in _DATA["incompatible"]
)

FAMILIES: tuple[str, ...] = tuple(_DATA["families"])

# Concepts any home-goods (WANDS) topic may draw on besides those its queries name.
WANDS_CONCEPTS: tuple[str, ...] = tuple(_DATA["wands_concepts"])

# Words that carry no intent in a query ("chairs for kids" -> chair, kids).
STOPWORDS: frozenset[str] = frozenset(_DATA["stopwords"])
