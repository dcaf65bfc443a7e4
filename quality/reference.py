"""The reference window distribution checks compare a batch against.

It holds the profiles (category histograms, rows per event-time window) of the table's
last `quality.reference_batches` batches within `quality.reference_hours`. Because it
rolls with the data, a seasonal shift moves the reference along with it and stays
quiet as long as it is gradual; a sudden shift stands out against the recent past.
Profiles are also written into `dq_results.details`, so a restarted sink rebuilds its
window from the table instead of starting blind (`ReferenceWindow.restore`).
"""

from __future__ import annotations

import json
import math
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any


class ReferenceWindow:
    def __init__(self, max_batches: int, max_age: timedelta) -> None:
        self.max_batches = max_batches
        self.max_age = max_age
        # batch_key -> (evaluated_at, profile); a replayed batch replaces its first try.
        self._batches: OrderedDict[str, tuple[datetime, dict[str, Any]]] = OrderedDict()

    def add(self, batch_key: str, at: datetime, profile: Mapping[str, Any]) -> None:
        self._batches.pop(batch_key, None)
        self._batches[batch_key] = (at, dict(profile))
        while len(self._batches) > self.max_batches:
            self._batches.popitem(last=False)

    def restore(self, recent: Iterable[Mapping[str, Any]]) -> None:
        """Rebuild the window from the profiles stored in `dq_results.details`.

        Args:
            recent: `dq_results` rows of one table (`check`, `evaluated_at`, `batch_key`,
                `details`), oldest first; rows without a profile are ignored.
        """
        profiles: dict[str, tuple[datetime, dict[str, Any]]] = {}
        for row in recent:
            if row["details"]:
                details = json.loads(row["details"])
                if "profile" in details:
                    _, profile = profiles.setdefault(row["batch_key"], (row["evaluated_at"], {}))
                    profile[row["check"]] = details["profile"]
        for key, (at, profile) in sorted(profiles.items(), key=lambda kv: kv[1][0]):
            self.add(key, at, profile)

    def _recent(self, now: datetime, key: str) -> list[Any]:
        return [
            profile[key]
            for at, profile in self._batches.values()
            if key in profile and now - at <= self.max_age
        ]

    def batches(self, now: datetime, key: str) -> int:
        return len(self._recent(now, key))

    def histogram(self, now: datetime, key: str) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self._recent(now, key):
            total.update({str(k): int(v) for k, v in counts.items()})
        return total

    def median(self, now: datetime, key: str) -> float | None:
        values = sorted(float(v) for v in self._recent(now, key))
        if not values:
            return None
        middle = len(values) // 2
        return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


def partition(
    reference: Counter[str], observed: Iterable[str], smoothing: float = 0.5
) -> dict[str, list[Any]]:
    """The reference histogram as a Great Expectations categorical partition over every
    category of either side. Additive smoothing keeps a category the reference never saw
    from making the divergence infinite: it still counts, heavily, but finitely."""
    values = sorted(set(reference) | {str(v) for v in observed})
    weights = [reference.get(v, 0) + smoothing for v in values]
    total = sum(weights)
    return {"values": values, "weights": [w / total for w in weights]}


def kl_divergence(observed: Mapping[str, int], expected: Mapping[str, Any]) -> float:
    """KL(observed || expected) in nats; what the expectation reports, for plots."""
    total = sum(observed.values())
    weights = dict(zip(expected["values"], expected["weights"], strict=True))
    return sum(
        (n / total) * math.log((n / total) / weights[k]) for k, n in observed.items() if n > 0
    )
