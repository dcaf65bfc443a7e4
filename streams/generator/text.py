"""Render concepts as text: query strings, pin titles/descriptions, VLM captions, board titles.

Everything takes an explicit `random.Random`, so the same draws give the same words. Titles
and descriptions each show only part of a pin's concepts (and some titles say nothing at
all), so a model has to combine title, description, caption and boards to judge a pin.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from streams.generator.vocabulary import CONCEPTS, KIND_ORDER, load_data

_KIND_RANK = {kind: n for n, kind in enumerate(KIND_ORDER)}


def _frozen(value: Any) -> Any:
    """Lists as tuples, at any depth (the phrasing is constant)."""
    if isinstance(value, dict):
        return {k: _frozen(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


# The phrasing is data, text.yaml beside this module: per language unless said otherwise;
# in templates {thing} / {Thing} is the rendered noun phrase, {noun} a topic's noun.
_TEXT = _frozen(load_data("text.yaml"))
# Titles that say nothing about the pin: only the caption and boards tell what it shows.
VAGUE_TITLES: dict[str, tuple[str, ...]] = _TEXT["vague_titles"]
# Low-quality pins read like spam; their hidden grade is one lower.
SPAM_TITLES: dict[str, tuple[str, ...]] = _TEXT["spam_titles"]
SPAM_DESCRIPTIONS: dict[str, str] = _TEXT["spam_descriptions"]
TITLE_TEMPLATES: dict[str, tuple[str, ...]] = _TEXT["title_templates"]
# Per language, per family.
DESCRIPTION_TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = _TEXT["description_templates"]
# Blog or shop names shown as a link title, per language and family.
SITES: dict[str, dict[str, str]] = _TEXT["sites"]
# What a captioner sees around the object, per family (captions are English, like most VLMs).
SCENES: dict[str, tuple[str, ...]] = _TEXT["scenes"]
CAPTION_DETAILS: dict[str, str] = _TEXT["caption_details"]
# Board titles: about the pin's topic, about its family, or about nothing in particular.
TOPIC_BOARD_TEMPLATES: dict[str, tuple[str, ...]] = _TEXT["topic_board_templates"]
FAMILY_BOARDS: dict[str, dict[str, tuple[str, str]]] = _TEXT["family_boards"]
GENERIC_BOARDS: dict[str, tuple[str, ...]] = _TEXT["generic_boards"]


def _ordered(concepts: Sequence[str]) -> list[str]:
    return sorted(concepts, key=lambda c: _KIND_RANK[CONCEPTS[c].kind])


def _upper_first(text: str) -> str:
    return text[:1].upper() + text[1:]


def noun_phrase(noun: str, concepts: Sequence[str], extras: Sequence[str], lang: str) -> str:
    """The noun with its attribute phrases in the language's order ("sillón azul de lino")."""
    before: list[str] = []
    after: list[str] = []
    for cid in _ordered(concepts):
        text, is_before = CONCEPTS[cid].phrase(lang)
        (before if is_before else after).append(text)
    # Extra terms come from English query logs, so they only ever precede an English noun.
    before.extend(extras)
    if lang == "ja":
        return "".join(before) + noun + "".join(after)
    return " ".join([*before, noun, *after])


def query_text(noun: str, concepts: Sequence[str], lang: str, rng: random.Random) -> str:
    """Keyword-style query: English puts attributes first, other languages after the noun."""
    words = [CONCEPTS[c].word(lang) for c in concepts]
    rng.shuffle(words)
    noun = noun.lower()
    parts = [*words, noun] if lang == "en" else [noun, *words]
    return " ".join(parts)


def title(
    noun: str, concepts: Sequence[str], extras: Sequence[str], lang: str, rng: random.Random
) -> str:
    thing = noun_phrase(noun, concepts, extras, lang)
    template = rng.choice(TITLE_TEMPLATES[lang])
    return template.format(thing=thing, Thing=_upper_first(thing))


def vague_title(lang: str, rng: random.Random) -> str:
    return rng.choice(VAGUE_TITLES[lang])


def spam_title(lang: str, rng: random.Random) -> str:
    return rng.choice(SPAM_TITLES[lang])


def description(
    noun: str,
    concepts: Sequence[str],
    extras: Sequence[str],
    lang: str,
    family: str,
    rng: random.Random,
) -> str:
    thing = noun_phrase(noun, concepts, extras, lang)
    template = rng.choice(DESCRIPTION_TEMPLATES[lang][family])
    return template.format(thing=thing, Thing=_upper_first(thing))


def link_title(
    noun: str, concepts: Sequence[str], extras: Sequence[str], lang: str, family: str
) -> str:
    return f"{_upper_first(noun_phrase(noun, concepts, extras, lang))} | {SITES[lang][family]}"


def caption(
    noun_en: str,
    concepts: Sequence[str],
    extras: Sequence[str],
    family: str,
    detailed: bool,
    rng: random.Random,
) -> str:
    """An English VLM-style caption; the detailed (newer captioner) one adds a sentence."""
    thing = noun_phrase(noun_en.lower(), concepts, extras, "en")
    scene = rng.choice(SCENES[family])
    if detailed:
        subject = f"{_article(thing)} {thing}".strip()
        return f"{_upper_first(subject)} {scene}. {CAPTION_DETAILS[family]}"
    subject = f"{_article(thing)} {thing}".strip()
    return f"a photo of {subject} {scene}"


def _article(phrase: str) -> str:
    words = phrase.split()
    if words and words[-1].endswith("s") and not words[-1].endswith("ss"):
        return ""  # plural: "a photo of christmas cookies"
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def topic_board_title(noun: str, lang: str, rng: random.Random) -> str:
    title_text = rng.choice(TOPIC_BOARD_TEMPLATES[lang]).format(noun=noun)
    # People type board names in lower case about half of the time.
    return title_text.lower() if lang != "de" and rng.random() < 0.5 else title_text


def family_board_title(family: str, lang: str, rng: random.Random) -> str:
    return rng.choice(FAMILY_BOARDS[lang][family])


def generic_board_title(lang: str, rng: random.Random) -> str:
    return rng.choice(GENERIC_BOARDS[lang])
