"""The hidden ground truth: a relevance grade 1..4 for a (query, pin) pair.

4 = the pin is the thing asked for with every asked attribute; 3 = right thing, attributes
partly shown or unknown; 2 = right thing with a conflicting attribute (red when blue was
asked), or a related thing of the same family; 1 = unrelated. A spammy pin, or one in a
language the searcher cannot read, loses a grade. Then a fixed per-pair noise moves some
grades by one, the way human raters disagree. Everything the grade depends on shows in the
pin's text (title, description, caption, boards), so a text model can learn it.
"""

from __future__ import annotations

import hashlib

from streams.generator.vocabulary import CONCEPTS, EXCLUSIVE_KINDS
from streams.generator.world import Pin, Query, World

NOISE_DOWN = 0.06
NOISE_UP = 0.06


def _conflicts(query: Query, pin: Pin) -> bool:
    pin_kinds: dict[str, set[str]] = {}
    for c in pin.concepts:
        pin_kinds.setdefault(CONCEPTS[c].kind, set()).add(c)
    for c in query.concepts:
        kind = CONCEPTS[c].kind
        if kind in EXCLUSIVE_KINDS and kind in pin_kinds and c not in pin_kinds[kind]:
            return True
    return False


def base_grade(query: Query, pin: Pin, world: World) -> int:
    q_topic, p_topic = world.topics[query.topic], world.topics[pin.topic]
    if q_topic.index != p_topic.index:
        grade = 2 if q_topic.family == p_topic.family else 1
    elif not query.required or query.required <= pin.terms:
        grade = 4
    elif _conflicts(query, pin):
        grade = 2
    else:
        grade = 3
    readable = pin.lang == query.lang or pin.lang == "en"
    if pin.low_quality or not readable:
        grade -= 1
    return max(1, grade)


def pair_noise(seed: int, query: str, pin_id: str) -> float:
    """A uniform number in [0, 1) fixed for the pair (not Python's salted hash)."""
    digest = hashlib.blake2b(f"{seed}|{query}|{pin_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Relevance:
    """Grades by (query index, pin index), computed once per pair."""

    def __init__(self, world: World) -> None:
        self.world = world
        self._cache: dict[tuple[int, int], int] = {}

    def grade(self, query_index: int, pin_index: int) -> int:
        key = (query_index, pin_index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        query = self.world.queries[query_index]
        pin = self.world.pins[pin_index]
        grade = base_grade(query, pin, self.world)
        u = pair_noise(self.world.seed, query.text, pin.pin_id)
        if u < NOISE_DOWN:
            grade = max(1, grade - 1)
        elif u < NOISE_DOWN + NOISE_UP:
            grade = min(4, grade + 1)
        self._cache[key] = grade
        return grade
