"""Clean enriched impressions and labels near the current time, and ways to break them.

Used by the demo burst, the tests and the overhead benchmark: each call is deterministic
for its seed, so a test can inject exactly one kind of failure into otherwise clean rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from schemas import EnrichedImpression, RelevanceLabel

# (country, locale, query) per market; the weights give the clean language mix.
MARKETS: tuple[tuple[str, str, str, float], ...] = (
    ("US", "en-US", "winter sweater", 0.45),
    ("GB", "en-GB", "knit jumper", 0.1),
    ("ES", "es-ES", "paella receta", 0.15),
    ("DE", "de-DE", "plätzchen rezept", 0.15),
    ("JP", "ja-JP", "抹茶 ケーキ", 0.15),
)
# The clean distribution of teacher grades on a 4-level scale.
GRADE_WEIGHTS: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1)


def enriched_impressions(
    n: int,
    end: datetime,
    span_s: float = 600.0,
    seed: int = 0,
    prefix: str = "imp",
    markets: Sequence[tuple[str, str, str, float]] = MARKETS,
) -> list[EnrichedImpression]:
    """`n` impressions evenly spread over the `span_s` seconds before `end`, with every
    feature present (caption, boards, top queries)."""
    rng = random.Random(seed)
    weights = [m[3] for m in markets]
    events = []
    for i in range(n):
        country, locale, query, _ = rng.choices(markets, weights)[0]
        at = end - timedelta(seconds=span_s * (n - i) / n)
        pin = f"p-{rng.randrange(200)}"
        events.append(
            EnrichedImpression(
                impression_id=f"{prefix}-{seed}-{i}",
                request_id=f"req-{seed}-{i // 10}",
                user_id=f"u-{rng.randrange(500)}",
                query=query,
                pin_id=pin,
                position=1 + i % 10,
                country=country,
                locale=locale,
                event_time=at,
                title=f"{query} idea {pin}",
                description=f"A pin about {query}",
                caption=f"a photo of {query}",
                caption_updated_at=at - timedelta(days=1),
                board_titles=[f"{query} board"],
                boards_updated_at=at - timedelta(days=1),
                top_queries=[query],
                top_queries_updated_at=at - timedelta(days=1),
                enriched_at=at,
            )
        )
    return events


def probabilities(rng: random.Random, weights: Sequence[float]) -> list[float]:
    """A teacher-like output: mass on one grade drawn from `weights`, the rest spread."""
    grade = rng.choices(range(len(weights)), weights)[0]
    raw = [0.05 + rng.random() * 0.1 for _ in weights]
    raw[grade] += 1.0
    total = sum(raw)
    return [p / total for p in raw]


def labels(
    n: int,
    end: datetime,
    span_s: float = 600.0,
    seed: int = 0,
    prefix: str = "imp",
    weights: Sequence[float] = GRADE_WEIGHTS,
    teacher_version: str = "teacher-v1",
) -> list[RelevanceLabel]:
    """`n` consistent labels: probabilities summing to 1, score the expected grade."""
    rng = random.Random(seed)
    events = []
    for i in range(n):
        probs = probabilities(rng, weights)
        events.append(
            RelevanceLabel(
                impression_id=f"{prefix}-{seed}-{i}",
                query="winter sweater",
                pin_id=f"p-{rng.randrange(200)}",
                teacher_version=teacher_version,
                label_scale=len(probs),
                probs=probs,
                score=sum(k * p for k, p in enumerate(probs)),
                labeled_at=end - timedelta(seconds=span_s * (n - i) / n),
                input_hash=f"h-{seed}-{i}",
            )
        )
    return events


E = TypeVar("E", EnrichedImpression, RelevanceLabel)


def changed(event: E, **fields: object) -> E:
    """A copy of a (frozen) event with some fields replaced, unvalidated on purpose: the
    point is to build the bad rows a buggy producer would send."""
    return event.model_copy(update=fields)
