"""Keep one row per event key in a table, across batches, restarts, rebalances and replays.

Duplicates reach a topic from at-least-once producers, from a Flink job restored from a
checkpoint or redeployed without a savepoint (Tansu's read_committed does not hide aborted
transactions), and from a labeler that relabels impressions it already labeled. A duplicate
carries the same key (`Event.dedupe_key`) and the same *dedupe time*
(`Event.dedupe_time_field`, else the model's `time_field`): for labels that is the labeled
impression's time, which a relabel days later repeats, not `labeled_at`, which it does not.

The guarantee: an event is dropped as a duplicate iff a row with the same key is in the
table, or earlier in the same batch, with a dedupe time on a UTC day within
``ceil(horizon_days)`` days of the event's own (7 by default). A resend later than that is
a new row; a row whose dedupe time is null falls back to the model's time field.

How it is checked, and what it costs:

- Keys are 128-bit BLAKE2b digests of the key fields, kept per UTC day of the dedupe time as
  sorted numpy ``S16`` arrays (16 bytes a key; new keys go to small sorted runs that are
  merged once they reach an eighth of the day). Two distinct keys share a digest with
  probability about n^2 / 2^129 over n keys: 5e6 keys give ~4e-26, and crafting a
  collision to get a record dropped needs a BLAKE2b collision.
- A day is loaded from the table on first use with a scan pruned on the dedupe time field
  (partitions where the table is partitioned by it, column metrics otherwise) that reads
  only the key columns. Resident days are capped by ``max_bytes``: the least recently used
  are evicted, and an evicted day is re-read on demand, never forgotten. At most one day
  more than the cap is held while a batch is checked against it.
- ``refresh`` catches up with commits of other writers without rescanning days: it walks
  the main branch from the current snapshot back to the one the index last saw and reads
  only the data files those snapshots added, and only those whose dedupe-time bounds touch
  a resident day. A snapshot that deleted or rewrote files (maintenance compaction, a delete)
  drops the days it touched instead. If the last-seen snapshot is no longer an ancestor
  (a rollback, or it was expired) the days touched by the snapshots that left the branch are
  dropped (all days when that is not known) and re-read on demand: keys of rolled-back rows
  are not kept, so those rows are accepted when the sink re-ingests them.
- ``remember`` is given only rows that were committed (never quarantined ones), so a
  corrected resend of a quarantined row is accepted.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    IsNull,
    LessThan,
    Or,
)
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestContent, ManifestEntryStatus
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import PrimitiveType

from schemas.base import Event

log = logging.getLogger(__name__)

DIGEST_BYTES = 16
DAY_US = 86_400_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_ORDINAL = EPOCH.toordinal()
# Days whose bounds Python's datetime can express (0001-01-01 .. 9999-12-30), since the epoch.
MIN_DAY = (datetime(1, 1, 1, tzinfo=UTC) - EPOCH).days
MAX_DAY = (datetime(9999, 12, 30, tzinfo=UTC) - EPOCH).days
# Snapshot ids whose touched days are remembered, to drop only those days on a rollback.
SNAPSHOT_LOG = 4096
_EMPTY = np.empty(0, dtype=f"S{DIGEST_BYTES}")
_NULL = b"\xff"  # never valid UTF-8, so no string encodes to it

# A batch to check or remember: events, or Arrow rows with the model's columns.
Rows: TypeAlias = Sequence[Event] | pa.Table | pa.RecordBatch


def _micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def _canon(value: object) -> bytes:
    """One key field as bytes: strings as UTF-8, times as epoch microseconds."""
    if value is None:
        return _NULL
    if isinstance(value, datetime):
        value = _micros(value)
    return str(value).encode("utf-8", "surrogatepass")


def _key_bytes(values: tuple[object, ...]) -> bytes:
    if len(values) == 1:
        return _canon(values[0])
    # Length-prefixed, so ("a:b", "c") and ("a", "b:c") stay apart.
    parts = [_canon(v) for v in values]
    return b"".join(b"%d:%s" % (len(p), p) for p in parts)


def digests(columns: Sequence[Sequence[object]]) -> np.ndarray:
    """128-bit BLAKE2b digests of keys, as an ``S16`` array in row order.

    Args:
        columns: one sequence per key field, each holding that field of every row
            (str, int, datetime or None).

    Returns:
        A numpy array of dtype ``S16``, one digest per row.
    """
    b2 = hashlib.blake2b
    if len(columns) == 1:
        values: Sequence[Any] = columns[0]
        try:  # the common case, one string field: ~3x faster than the general path
            data = b"".join(
                [b2(v.encode("utf-8", "surrogatepass"), digest_size=16).digest() for v in values]
            )
        except AttributeError:
            data = b"".join([b2(_canon(v), digest_size=16).digest() for v in columns[0]])
    else:
        rows = zip(*columns, strict=True)
        data = b"".join([b2(_key_bytes(r), digest_size=16).digest() for r in rows])
    return np.frombuffer(data, dtype=f"S{DIGEST_BYTES}").copy() if data else _EMPTY


def _contains(sorted_keys: np.ndarray, probe: np.ndarray) -> np.ndarray:
    """Boolean mask: which of `probe` occur in the sorted array `sorted_keys`."""
    if not len(sorted_keys) or not len(probe):
        return np.zeros(len(probe), dtype=bool)
    at = np.searchsorted(sorted_keys, probe)
    hit = at < len(sorted_keys)
    hit[hit] = sorted_keys[at[hit]] == probe[hit]
    return hit


class _Day:
    """The key digests of one UTC day: a sorted unique base plus small sorted runs."""

    __slots__ = ("base", "runs")

    def __init__(self, keys: np.ndarray) -> None:
        self.base = np.unique(keys)
        self.runs: list[np.ndarray] = []

    @property
    def nbytes(self) -> int:
        return int(self.base.nbytes + sum(r.nbytes for r in self.runs))

    def __len__(self) -> int:
        return len(self.base) + sum(len(r) for r in self.runs)

    def add(self, keys: np.ndarray) -> None:
        if not len(keys):
            return
        self.runs.append(np.unique(keys))
        pending = sum(len(r) for r in self.runs)
        if pending > max(4096, len(self.base) // 8) or len(self.runs) > 8:
            self.base = np.unique(np.concatenate([self.base, *self.runs]))
            self.runs = []

    def contains(self, probe: np.ndarray) -> np.ndarray:
        hit = _contains(self.base, probe)
        for run in self.runs:
            hit |= _contains(run, probe)
        return hit


@dataclass
class KeyIndexStats:
    """What the index read and dropped, for tests, benchmarks and logs."""

    files_read: int = 0
    rows_read: int = 0
    days_loaded: int = 0
    days_evicted: int = 0
    days_dropped: int = 0
    snapshots_read: int = 0


class KeyIndex:
    """Which events of a batch are new to a table: see the module docstring.

    Args:
        key_fields: the fields that identify one event (``Event.dedupe_key``).
        time_field: the dedupe time field (``dedupe_time_field`` or ``time_field``).
        horizon_days: a copy this many days (rounded up to whole UTC days) before or after
            an earlier one is still a duplicate.
        max_bytes: memory for resident days' digests (16 bytes a key); more days are
            evicted, least recently used first, and re-read from the table when needed.
        fallback_time_field: the field used where `time_field` is null (labels written
            before ``impression_time`` existed fall back to ``labeled_at``).
    """

    def __init__(
        self,
        key_fields: Sequence[str],
        time_field: str,
        horizon_days: float = 7.0,
        max_bytes: int = 256 << 20,
        fallback_time_field: str | None = None,
    ) -> None:
        if not key_fields:
            raise ValueError("KeyIndex needs at least one key field; pass the model's dedupe_key")
        if horizon_days < 0 or max_bytes < 0:
            raise ValueError(
                f"KeyIndex horizon_days={horizon_days}, max_bytes={max_bytes}: both must be >= 0"
            )
        self.key_fields = tuple(key_fields)
        self.time_field = time_field
        self.fallback_time_field = (
            fallback_time_field if fallback_time_field != time_field else None
        )
        self.horizon = math.ceil(horizon_days)
        self.max_bytes = max_bytes
        self.stats = KeyIndexStats()
        self._days: OrderedDict[int, _Day] = OrderedDict()
        self._bytes = 0
        # The snapshot resident days reflect (None: the table had none), once synced.
        self._synced = False
        self._seen: int | None = None
        self._log: OrderedDict[int, frozenset[int] | None] = OrderedDict()
        self._warned = False

    @classmethod
    def for_model(
        cls, model: type[Event], horizon_days: float = 7.0, max_bytes: int = 256 << 20
    ) -> KeyIndex | None:
        """The index for a model's table, or None when the model declares no dedupe key.

        Args:
            model: the event model (its ``dedupe_key``, ``dedupe_time_field``, ``time_field``).
            horizon_days: see the class docstring (``SinkSettings``).
            max_bytes: see the class docstring (``SinkSettings``).

        Returns:
            A KeyIndex keyed by ``model.dedupe_key`` around ``model.dedupe_time_field``
            (falling back to ``model.time_field`` where it is null), or None.
        """
        if not model.dedupe_key:
            return None
        time_field = model.dedupe_time_field or model.time_field
        return cls(model.dedupe_key, time_field, horizon_days, max_bytes, model.time_field)

    # -- events ---------------------------------------------------------------------------

    def _event_days(self, events: Sequence[Event]) -> np.ndarray:
        days = np.empty(len(events), dtype=np.int64)
        field, fallback = self.time_field, self.fallback_time_field
        for i, event in enumerate(events):
            when = getattr(event, field)
            if when is None and fallback is not None:
                when = getattr(event, fallback)
            if when is None:
                raise ValueError(
                    f"{type(event).__name__} {event.key}: {field} is null; the sink "
                    "cannot place it for dedupe, so the decoder must refuse it"
                )
            if when.tzinfo is not UTC:
                when = when.astimezone(UTC)
            days[i] = when.toordinal() - EPOCH_ORDINAL
        return days

    def _event_digests(self, events: Sequence[Event]) -> np.ndarray:
        return digests([[getattr(e, f) for e in events] for f in self.key_fields])

    def keys_and_days(self, rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        """Key digests and dedupe days of events, or of Arrow rows with the model columns
        (the same digests: times are keyed as epoch microseconds either way).

        Args:
            rows: events, or Arrow rows with the key and time columns.

        Returns:
            The ``S16`` digests and the UTC days (since the epoch), one per row; pass
            them to `new_indices` and (those of the rows written) `remember` to compute
            them once.

        Raises:
            ValueError: a row has no dedupe time (the decoder should have refused it).
        """
        if not isinstance(rows, pa.Table | pa.RecordBatch):
            return self._event_digests(rows), self._event_days(rows)
        when = rows.column(self.time_field)
        if self.fallback_time_field is not None:
            when = pc.coalesce(when, rows.column(self.fallback_time_field))
        if when.null_count:
            raise ValueError(
                f"{when.null_count} rows have a null {self.time_field}; the sink cannot "
                "place them for dedupe, so the decoder must refuse them"
            )
        return self._digests_of(rows), self._batch_days(rows)

    # -- the public interface ---------------------------------------------------------------

    def new_indices(
        self, table: Table, events: Rows, keys: tuple[np.ndarray, np.ndarray] | None = None
    ) -> list[int]:
        """Indices of the events whose key is in neither the table nor earlier in `events`.

        Catches up with the table first (``refresh``). Call ``remember`` with the rows once
        they are committed.

        Args:
            table: the sink's table, freshly refreshed from the catalog.
            events: the batch, in offset order: events, or Arrow rows with the model's
                key and time columns.
            keys: `keys_and_days(events)`, when the caller has them already.

        Returns:
            Ascending indices into `events` of the rows to write.

        Raises:
            ValueError: an event has no dedupe time (the decoder should have refused it).
        """
        if not len(events):
            return []
        self.refresh(table)
        digest, days = keys if keys is not None else self.keys_and_days(events)
        dup = self._batch_duplicates(digest, days)
        self._check_table(table, digest, days, dup)
        return np.flatnonzero(~dup).tolist()

    def remember(
        self,
        events: Rows,
        table: Table | None = None,
        keys: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Add the keys of rows just committed to the resident days.

        Args:
            events: only the rows the commit wrote (not quarantined or dropped ones), as
                events or Arrow rows.
            table: optionally the table right after that commit; when its snapshot follows
                directly on the one the index saw, ``refresh`` will not read its files.
            keys: `keys_and_days(events)`, when the caller has them already.
        """
        if not len(events):
            return
        digest, days = keys if keys is not None else self.keys_and_days(events)
        for day in np.unique(days).tolist():
            if day in self._days:
                before = self._days[day].nbytes
                self._days[day].add(digest[days == day])
                self._bytes += self._days[day].nbytes - before
        snapshot = table.current_snapshot() if table is not None else None
        if snapshot is not None and self._synced and snapshot.parent_snapshot_id == self._seen:
            self._seen = snapshot.snapshot_id
            self._note(snapshot.snapshot_id, frozenset(np.unique(days).tolist()))
        self._enforce_cap()

    def refresh(self, table: Table) -> None:
        """Catch up with commits made since the index last looked, reading only new files.

        Args:
            table: the table as loaded now (its main branch is the truth).
        """
        current = table.current_snapshot()
        current_id = current.snapshot_id if current is not None else None
        if self._synced and current_id == self._seen:
            return
        if not self._synced or not self._days:
            self._synced, self._seen = True, current_id
            return
        new: list[Snapshot] = []
        snapshot = current
        while snapshot is not None and snapshot.snapshot_id != self._seen:
            new.append(snapshot)
            parent = snapshot.parent_snapshot_id
            snapshot = table.snapshot_by_id(parent) if parent is not None else None
        if snapshot is None and self._seen is not None:
            # The snapshot we saw left the main branch (rollback) or was expired.
            new = self._unwind(table, {s.snapshot_id for s in new})
        for snapshot in reversed(new):
            if not self._days:
                break
            self._apply(table, snapshot)
        self._seen = current_id

    def forget(self) -> None:
        """Drop every resident day; they are re-read from the table when next needed."""
        self.stats.days_dropped += len(self._days)
        self._days.clear()
        self._bytes = 0
        self._synced, self._seen = False, None

    @property
    def nbytes(self) -> int:
        """Bytes held by resident days' digests (the part ``max_bytes`` caps)."""
        return self._bytes

    @property
    def resident_keys(self) -> int:
        """Keys held in memory (a key remembered twice before a merge counts twice)."""
        return sum(len(d) for d in self._days.values())

    # -- checking a batch ---------------------------------------------------------------------

    def _batch_duplicates(self, keys: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Events whose key appears earlier in the batch within the horizon."""
        dup = np.zeros(len(keys), dtype=bool)
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        repeated = np.flatnonzero(counts[inverse] > 1)
        groups: dict[int, list[int]] = {}
        for i in repeated.tolist():
            groups.setdefault(int(inverse[i]), []).append(i)
        for members in groups.values():
            for n, i in enumerate(members):
                if any(abs(int(days[i]) - int(days[j])) <= self.horizon for j in members[:n]):
                    dup[i] = True
        return dup

    def _check_table(
        self, table: Table, keys: np.ndarray, days: np.ndarray, dup: np.ndarray
    ) -> None:
        todo = np.flatnonzero(~dup)
        if not len(todo):
            return
        # Probes in key order: numpy's binary search is ~3x faster on sorted needles.
        todo = todo[np.argsort(keys[todo], kind="stable")]
        wanted: set[int] = set()
        for day in np.unique(days[todo]).tolist():
            wanted.update(
                range(max(day - self.horizon, MIN_DAY), min(day + self.horizon, MAX_DAY) + 1)
            )
        # Resident days first, so loading the others cannot evict one still to be checked.
        order = sorted(wanted, key=lambda d: (d not in self._days, d))
        loaded: list[int] = []
        for day in order:
            near = todo[np.abs(days[todo] - day) <= self.horizon]
            near = near[~dup[near]]
            if not len(near):
                continue
            if day not in self._days:
                loaded.append(day)
            dup[near] |= self._day(table, day).contains(keys[near])
            self._enforce_cap(keep=day)
        self._enforce_cap()
        if not self._warned and any(d not in self._days for d in loaded):
            self._warned = True
            log.warning(
                "dedupe index on %s: the %d days around a batch do not fit in max_bytes=%d; "
                "days are re-read from the table on every batch (raise the sink's dedupe "
                "max_bytes)",
                table.name()[-1],
                len(wanted),
                self.max_bytes,
            )

    def _day(self, table: Table, day: int) -> _Day:
        found = self._days.get(day)
        if found is None:
            found = _Day(self._load_day(table, day))
            self._days[day] = found
            self._bytes += found.nbytes
            self.stats.days_loaded += 1
        self._days.move_to_end(day)
        return found

    def _enforce_cap(self, keep: int | None = None) -> None:
        while self._bytes > self.max_bytes and self._days:
            oldest = next(iter(self._days))
            if oldest == keep:
                if len(self._days) == 1:
                    return
                self._days.move_to_end(oldest)
                oldest = next(iter(self._days))
            self._bytes -= self._days.pop(oldest).nbytes
            self.stats.days_evicted += 1

    # -- reading the table ---------------------------------------------------------------------

    def _day_filter(self, day: int) -> BooleanExpression:
        lo = EPOCH + timedelta(days=day)
        hi = lo + timedelta(days=1)

        def within(name: str) -> BooleanExpression:
            return And(GreaterThanOrEqual(name, lo.isoformat()), LessThan(name, hi.isoformat()))

        if self.fallback_time_field is None:
            return within(self.time_field)
        return Or(
            within(self.time_field),
            And(IsNull(self.time_field), within(self.fallback_time_field)),
        )

    def _load_day(self, table: Table, day: int) -> np.ndarray:
        if not self._synced:
            self.refresh(table)
        if self._seen is None:
            return _EMPTY
        row_filter = self._day_filter(day)
        scan = table.scan(
            row_filter=row_filter, selected_fields=self.key_fields, snapshot_id=self._seen
        )
        tasks = list(scan.plan_files())
        self.stats.files_read += len(tasks)
        reader = ArrowScan(table.metadata, table.io, scan.projection(), row_filter)
        chunks = [self._batch_digests(b) for b in reader.to_record_batches(tasks)]
        return np.concatenate(chunks) if chunks else _EMPTY

    def _batch_digests(self, batch: pa.RecordBatch) -> np.ndarray:
        self.stats.rows_read += batch.num_rows
        return self._digests_of(batch)

    def _digests_of(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        chunks = []
        # Python strings for 64k rows at a time: a 1M-row record batch would cost ~100 MB.
        for start in range(0, batch.num_rows, 1 << 16):
            part = batch.slice(start, 1 << 16)
            columns = []
            for name in self.key_fields:
                column = part.column(name)
                if pa.types.is_timestamp(column.type):
                    column = pc.cast(column, pa.int64())
                columns.append(column.to_pylist())
            chunks.append(digests(columns))
        return np.concatenate(chunks) if chunks else _EMPTY

    def _batch_days(self, batch: pa.RecordBatch | pa.Table) -> np.ndarray:
        when = pc.cast(batch.column(self.time_field), pa.int64())
        if self.fallback_time_field is not None:
            when = pc.coalesce(when, pc.cast(batch.column(self.fallback_time_field), pa.int64()))
        micros = when.to_numpy(zero_copy_only=False)
        return np.floor_divide(micros, DAY_US).astype(np.int64)

    def _time_fields(self) -> tuple[str, ...]:
        return (self.time_field,) + (
            (self.fallback_time_field,) if self.fallback_time_field else ()
        )

    def _file_days(self, table: Table, data_file: DataFile) -> tuple[int, int] | None:
        """First and last UTC day of the file's dedupe times (None: not known)."""
        schema = table.schema()
        lo_days: list[int] = []
        hi_days: list[int] = []
        for name in self._time_fields():
            field = schema.find_field(name)
            fid = field.field_id
            values = (data_file.value_counts or {}).get(fid)
            nulls = (data_file.null_value_counts or {}).get(fid)
            lower = (data_file.lower_bounds or {}).get(fid)
            upper = (data_file.upper_bounds or {}).get(fid)
            if values is not None and nulls is not None and values == nulls:
                continue  # all null: the fallback field decides
            if lower is None or upper is None:
                return None
            kind = field.field_type
            if not isinstance(kind, PrimitiveType):
                return None
            lo_days.append(int(from_bytes(kind, lower)) // DAY_US)
            hi_days.append(int(from_bytes(kind, upper)) // DAY_US)
            if nulls == 0:
                break  # no row falls back to the next field
        if not lo_days:
            return None
        return min(lo_days), max(hi_days)

    def _snapshot_files(
        self, table: Table, snapshot: Snapshot
    ) -> tuple[list[DataFile], list[DataFile], bool]:
        """Data files the snapshot added and removed, and whether it added delete files."""
        added: list[DataFile] = []
        removed: list[DataFile] = []
        deletes = False
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot.snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.snapshot_id != snapshot.snapshot_id:
                    continue
                if manifest.content != ManifestContent.DATA:
                    deletes = deletes or entry.status == ManifestEntryStatus.ADDED
                elif entry.status == ManifestEntryStatus.ADDED:
                    added.append(entry.data_file)
                elif entry.status == ManifestEntryStatus.DELETED:
                    removed.append(entry.data_file)
        return added, removed, deletes

    def _apply(self, table: Table, snapshot: Snapshot) -> None:
        """Bring resident days up to date with one new snapshot of the main branch."""
        self.stats.snapshots_read += 1
        added, removed, deletes = self._snapshot_files(table, snapshot)
        spans = [self._file_days(table, f) for f in [*added, *removed]]
        known = all(s is not None and s[1] - s[0] <= SNAPSHOT_LOG for s in spans)
        touched = frozenset(d for s in spans if s is not None for d in range(s[0], s[1] + 1))
        self._note(snapshot.snapshot_id, touched if known else None)
        if deletes:
            self._drop(None)
            return
        if removed:
            # Rows went away (a delete, or a compaction that rewrote them): re-read those days.
            self._drop({d for span in spans[len(added) :] for d in _span_days(span, self._days)})
        wanted = [
            f
            for f, span in zip(added, spans, strict=False)
            if any(d in self._days for d in _span_days(span, self._days))
        ]
        if not wanted:
            return
        columns = tuple(dict.fromkeys(self.key_fields + self._time_fields()))
        projection = table.schema().select(*columns)
        reader = ArrowScan(table.metadata, table.io, projection, AlwaysTrue())
        self.stats.files_read += len(wanted)
        for batch in reader.to_record_batches([FileScanTask(f) for f in wanted]):
            keys = self._batch_digests(batch)
            days = self._batch_days(batch)
            for day in np.unique(days).tolist():
                if day in self._days:
                    before = self._days[day].nbytes
                    self._days[day].add(keys[days == day])
                    self._bytes += self._days[day].nbytes - before
        self._enforce_cap()

    def _unwind(self, table: Table, branch: set[int]) -> list[Snapshot]:
        """After a rollback or expiry: drop what left the branch; return the snapshots to
        apply (newest first), from the current one down to the common ancestor."""
        gone: list[int] = []
        snapshot = table.snapshot_by_id(self._seen) if self._seen is not None else None
        while snapshot is not None and snapshot.snapshot_id not in branch:
            gone.append(snapshot.snapshot_id)
            parent = snapshot.parent_snapshot_id
            snapshot = table.snapshot_by_id(parent) if parent is not None else None
        current = table.current_snapshot()
        if snapshot is None or any(self._log.get(s, None) is None for s in gone):
            # Not traceable: start over; every day is re-read on demand.
            self.forget()
            self._synced, self._seen = True, current.snapshot_id if current is not None else None
            return []
        self._drop({d for s in gone for d in self._log[s] or ()})
        base = snapshot.snapshot_id
        new: list[Snapshot] = []
        walk = current
        while walk is not None and walk.snapshot_id != base:
            new.append(walk)
            parent = walk.parent_snapshot_id
            walk = table.snapshot_by_id(parent) if parent is not None else None
        return new

    def _drop(self, days: set[int] | None) -> None:
        for day in list(self._days) if days is None else sorted(days):
            found = self._days.pop(day, None)
            if found is not None:
                self._bytes -= found.nbytes
                self.stats.days_dropped += 1

    def _note(self, snapshot_id: int, days: frozenset[int] | None) -> None:
        self._log[snapshot_id] = days
        while len(self._log) > SNAPSHOT_LOG:
            self._log.popitem(last=False)


def _span_days(span: tuple[int, int] | None, resident: Iterable[int]) -> Iterator[int]:
    """Resident days inside a file's day span (all of them when the span is unknown)."""
    for day in list(resident):
        if span is None or span[0] <= day <= span[1]:
            yield day
