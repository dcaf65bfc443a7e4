"""Freshness: how long after an impression happened its label became visible in Iceberg.

Visible = the commit of the labels-table snapshot that added the row. Each sink batch stamps
its rows with `_ingested_at` just before committing, so a row's visibility time is the first
snapshot at or after its `_ingested_at`.

The clock starts at the impression's `event_time` for live traffic. A replay of simulated
history (the demo) has event times days in the past, so there it starts at `enriched_at`,
when the enrichment job emitted the row: the labeling path's own freshness.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, GreaterThanOrEqual
from pyiceberg.table import Table


class Freshness(BaseModel):
    start: str
    labels: int
    lag_p50_s: float | None
    lag_p95_s: float | None
    lag_max_s: float | None


def label_lags(
    catalog: Catalog,
    namespace: str,
    since: datetime | None = None,
    start: Literal["event_time", "enriched_at"] = "event_time",
) -> np.ndarray:
    """Seconds from the impression's `start` time to label visibility, one per label row.

    Labels carry their impression's event time; only labels written before they did (or
    `start="enriched_at"`) need the join with the enriched table."""
    row_filter: BooleanExpression = AlwaysTrue()
    if since is not None:
        row_filter = GreaterThanOrEqual("labeled_at", since.isoformat())
    labels_table = catalog.load_table(f"{namespace}.labels")
    fields = ("impression_id", "_ingested_at", "impression_time")
    labels = labels_table.scan(row_filter=row_filter, selected_fields=fields).to_arrow()
    if start == "event_time":
        carried = labels.filter(pc.is_valid(labels.column("impression_time")))
        lags = _lags(labels_table, carried.column("impression_time"), carried)
        rest = labels.filter(pc.is_null(labels.column("impression_time")))
        if rest.num_rows == 0:
            return lags
        return np.concatenate([lags, _joined_lags(catalog, namespace, labels_table, rest, start)])
    return _joined_lags(catalog, namespace, labels_table, labels, start)


def _joined_lags(
    catalog: Catalog, namespace: str, labels_table: Table, labels: pa.Table, start: str
) -> np.ndarray:
    enriched = (
        catalog.load_table(f"{namespace}.impressions_enriched")
        .scan(selected_fields=("impression_id", start))
        .to_arrow()
    )
    at = pc.index_in(labels.column("impression_id"), value_set=enriched.column("impression_id"))
    known = pc.is_valid(at)
    labels, at = labels.filter(known), at.filter(known)
    return _lags(labels_table, enriched.column(start).take(at), labels)


def _lags(labels_table: Table, starts: pa.ChunkedArray | pa.Array, labels: pa.Table) -> np.ndarray:
    if labels.num_rows == 0:
        return np.array([])
    start_s = starts.cast("int64").to_numpy(zero_copy_only=False) / 1e6
    ingested_s = labels.column("_ingested_at").cast("int64").to_numpy(zero_copy_only=False) / 1e6
    return np.maximum(visible_at(labels_table, ingested_s) - start_s, 0.0)


def visible_at(table: Table, ingested_s: Sequence[float] | np.ndarray) -> np.ndarray:
    """Epoch seconds each row became readable: the first snapshot committed at or after
    the `_ingested_at` the sink stamped it with just before committing."""
    commits = sorted(s.timestamp_ms / 1000 for s in table.metadata.snapshots)
    return np.array(
        [commits[min(bisect.bisect_left(commits, t), len(commits) - 1)] for t in ingested_s]
    )


def freshness(
    catalog: Catalog,
    namespace: str,
    since: datetime | None = None,
    start: Literal["event_time", "enriched_at"] = "event_time",
) -> Freshness:
    lags = label_lags(catalog, namespace, since, start)
    lags = lags[np.isfinite(lags)]  # rows without the start time say nothing
    if lags.size == 0:
        return Freshness(start=start, labels=0, lag_p50_s=None, lag_p95_s=None, lag_max_s=None)
    return Freshness(
        start=start,
        labels=int(lags.size),
        lag_p50_s=round(float(np.percentile(lags, 50)), 3),
        lag_p95_s=round(float(np.percentile(lags, 95)), 3),
        lag_max_s=round(float(lags.max()), 3),
    )
