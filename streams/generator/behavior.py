"""How a results page is ordered and how users act on it (a position-biased click model)."""

from __future__ import annotations

import random

from schemas.engagement import Action

# The ranker sees relevance through noise: relevant pins are likelier on top, not always.
RANK_NOISE = 0.8
# P(the user looks at position p) = EXAMINE_TOP * p ** -EXAMINE_DECAY
EXAMINE_TOP = 0.95
EXAMINE_DECAY = 0.7
# Per grade 1..4 (index 0 unused): chance of each action once the pin is looked at.
CLICK = (0.0, 0.03, 0.10, 0.30, 0.55)
CLOSEUP = (0.0, 0.04, 0.08, 0.18, 0.28)
LONG_CLICK_GIVEN_CLICK = (0.0, 0.08, 0.18, 0.40, 0.60)
SAVE_GIVEN_INTEREST = (0.0, 0.02, 0.05, 0.12, 0.25)


def rank(grades: list[tuple[int, int]], rng: random.Random) -> list[tuple[int, int]]:
    """(pin, grade) pairs, best first, by grade plus ranking noise."""
    scored = [(grade + rng.gauss(0.0, RANK_NOISE), n) for n, (_, grade) in enumerate(grades)]
    scored.sort(reverse=True)
    return [grades[n] for _, n in scored]


def engagements(grade: int, position: int, rng: random.Random) -> list[tuple[Action, float]]:
    """(action, seconds after the impression) for one shown pin; empty for most."""
    examined = EXAMINE_TOP * position**-EXAMINE_DECAY
    actions: list[tuple[Action, float]] = []
    interested = False
    if rng.random() < examined * CLOSEUP[grade]:
        actions.append(("closeup", 2.0 + rng.expovariate(1 / 8.0)))
        interested = True
    if rng.random() < examined * CLICK[grade]:
        clicked_at = 3.0 + rng.expovariate(1 / 15.0)
        actions.append(("click", clicked_at))
        interested = True
        if rng.random() < LONG_CLICK_GIVEN_CLICK[grade]:
            # A long click is reported when the user comes back after a long dwell.
            actions.append(("long_click", clicked_at + 30.0 + rng.expovariate(1 / 90.0)))
    if interested and rng.random() < SAVE_GIVEN_INTEREST[grade]:
        actions.append(("save", 10.0 + rng.expovariate(1 / 60.0)))
    return actions
