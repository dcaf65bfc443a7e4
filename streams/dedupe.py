"""Keep one row per event key in a table, across batches, restarts and sink processes.

Duplicates reach a topic from at-least-once producers and from a Flink job restored from a
checkpoint (Tansu's read_committed does not hide aborted transactions). A duplicate carries
the same key and, for every model here, an event time on the same or the next day, so the
index holds the keys of the days a batch touches (plus the day before), loaded from the
table with partition pruning and cached for a bounded number of days.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from datetime import UTC, date, datetime, time, timedelta

from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

from schemas.base import Event

Key = tuple[Hashable, ...]


def _day_bounds(day: date) -> tuple[str, str]:
    start = datetime.combine(day, time(), tzinfo=UTC)
    return start.isoformat(), (start + timedelta(days=1)).isoformat()


class DayKeyIndex:
    def __init__(self, key_fields: Sequence[str], time_field: str, max_days: int = 64) -> None:
        self.key_fields = tuple(key_fields)
        self.time_field = time_field
        self.max_days = max_days
        self._days: OrderedDict[date, set[Key]] = OrderedDict()

    def key_of(self, event: Event) -> Key:
        return tuple(getattr(event, f) for f in self.key_fields)

    def _keys_in_table(self, table: Table, day: date) -> set[Key]:
        lo, hi = _day_bounds(day)
        rows = table.scan(
            row_filter=And(GreaterThanOrEqual(self.time_field, lo), LessThan(self.time_field, hi)),
            selected_fields=self.key_fields,
        ).to_arrow()
        columns = [rows.column(f).to_pylist() for f in self.key_fields]
        return set(zip(*columns, strict=True)) if columns else set()

    def _day(self, table: Table, day: date) -> set[Key]:
        if day not in self._days:
            self._days[day] = self._keys_in_table(table, day)
            while len(self._days) > self.max_days:
                self._days.popitem(last=False)
        self._days.move_to_end(day)
        return self._days[day]

    def new_indices(self, table: Table, events: Sequence[Event]) -> list[int]:
        """Indices of the events whose key is in neither the table nor earlier in `events`.
        Call `remember` with them once they are committed."""
        keep: list[int] = []
        pending: set[Key] = set()
        for i, event in enumerate(events):
            key = self.key_of(event)
            day = getattr(event, self.time_field).date()
            if key in pending or key in self._day(table, day):
                continue
            if key in self._day(table, day - timedelta(days=1)):
                continue
            pending.add(key)
            keep.append(i)
        return keep

    def remember(self, events: Sequence[Event]) -> None:
        for event in events:
            day = getattr(event, self.time_field).date()
            if day in self._days:
                self._days[day].add(self.key_of(event))

    def forget(self) -> None:
        """Drop the cache: after a rebalance another sink may have committed keys we hold."""
        self._days.clear()
