"""Training sets for students: enriched rows joined with one teacher version's labels.

`build_training_set` writes an Iceberg table (one row per impression and version, features
as of the impression's time, as the enrichment job froze them); `TrainingSetDataset`
streams such a table into PyTorch in batches without loading it whole.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    LessThan,
)
from torch.utils.data import IterableDataset, get_worker_info

from infra.catalog import ensure_namespace, ensure_table, open_catalog
from infra.config import Settings
from infra.progress import progress_bar
from serving.teacher.text import build_pin_text

LABEL_COLUMNS = ("teacher_version", "label_scale", "probs", "score", "labeled_at", "input_hash")


def _latest_label_per_impression(labels: pa.Table) -> pa.Table:
    """One label per impression: the newest, should a version have labeled a row twice."""
    if labels.num_rows == 0:
        return labels
    order = pc.sort_indices(labels, [("impression_id", "ascending"), ("labeled_at", "descending")])
    labels = labels.take(order)
    ids = labels.column("impression_id").to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return labels.filter(pa.array(first))


def build_training_set(
    settings: Settings,
    teacher_version: str,
    out_table: str,
    since: datetime | None = None,
) -> int:
    """(Re)write `out_table`'s rows of `teacher_version`; returns the row count. Idempotent:
    running it again replaces that version's rows with the same join."""
    stages = progress_bar(total=4, desc="dataset build", unit="stage")
    stages.set_postfix_str("reading labels")
    catalog = open_catalog(settings)
    ns = settings.catalog.namespace
    enriched_filter: BooleanExpression = AlwaysTrue()
    if since is not None:
        enriched_filter = GreaterThanOrEqual("event_time", since.isoformat())
    enriched = catalog.load_table(f"{ns}.impressions_enriched").scan(row_filter=enriched_filter)
    labels = (
        catalog.load_table(f"{ns}.labels")
        .scan(
            row_filter=EqualTo("teacher_version", teacher_version),
            selected_fields=("impression_id", *LABEL_COLUMNS),
        )
        .to_arrow()
    )
    labels = _latest_label_per_impression(labels)
    stages.update()
    stages.set_postfix_str(f"{labels.num_rows} labels; reading enriched rows")
    rows = enriched.to_arrow().drop_columns(["_batch_id", "_ingested_at"])
    stages.update()
    stages.set_postfix_str(f"joining {rows.num_rows} enriched rows")
    # Arrow's hash join cannot carry list columns (board_titles, probs): join by position.
    at = pc.index_in(rows.column("impression_id"), value_set=labels.column("impression_id"))
    has_label = pc.is_valid(at)
    rows, at = rows.filter(has_label), at.filter(has_label)
    joined = rows
    for name in LABEL_COLUMNS:
        joined = joined.append_column(name, labels.column(name).take(at))
    probs = joined.column("probs").to_pylist()
    label = [int(np.argmax(p)) + 1 for p in probs]
    ensure_namespace(catalog, ns)
    table = ensure_table(catalog, ns, out_table, schema_of="training_examples")
    now = datetime.now(UTC)
    joined = joined.append_column("label", pa.array(label, pa.int64()))
    joined = joined.append_column(
        "_batch_id", pa.array([f"dataset:{teacher_version}"] * len(label))
    )
    joined = joined.append_column(
        "_ingested_at", pa.array([now] * len(label), pa.timestamp("us", tz="UTC"))
    )
    schema = table.schema().as_arrow()
    out = pa.Table.from_arrays(
        [joined.column(n).cast(schema.field(n).type) for n in schema.names], schema=schema
    )
    stages.update()
    stages.set_postfix_str(f"writing {out.num_rows} rows")
    table.overwrite(out, overwrite_filter=EqualTo("teacher_version", teacher_version))
    stages.update()
    stages.close()
    return out.num_rows


class TrainingSetDataset(IterableDataset):  # type: ignore[type-arg]
    """Streams a training-set table as batches of dicts (lists of text, tensors of labels).

    With several DataLoader workers each reads a disjoint share of the table's files.

    Args:
        settings: the platform settings (catalog).
        table: the training-set table's name in the platform namespace.
        teacher_version: only this version's labels (default: every version's).
        batch_size: rows per yielded batch.
        with_text: add `pin_text`, the text the teacher read (`build_pin_text`).
        snapshot_id: read this Iceberg snapshot (default: the current one), so a model
            trained from it can be rebuilt exactly.
        since, until: only impressions with `since <= event_time < until`.
    """

    def __init__(
        self,
        settings: Settings,
        table: str,
        teacher_version: str | None = None,
        batch_size: int = 256,
        with_text: bool = True,
        snapshot_id: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        self.settings = settings
        self.table = table
        self.teacher_version = teacher_version
        self.batch_size = batch_size
        self.with_text = with_text
        self.snapshot_id = snapshot_id
        self.since = since
        self.until = until

    def _files(self) -> list[Any]:
        table = open_catalog(self.settings).load_table(
            f"{self.settings.catalog.namespace}.{self.table}"
        )
        row_filter: BooleanExpression = AlwaysTrue()
        if self.teacher_version is not None:
            row_filter = And(row_filter, EqualTo("teacher_version", self.teacher_version))
        if self.since is not None:
            row_filter = And(row_filter, GreaterThanOrEqual("event_time", self.since.isoformat()))
        if self.until is not None:
            row_filter = And(row_filter, LessThan("event_time", self.until.isoformat()))
        scan = table.scan(row_filter=row_filter, snapshot_id=self.snapshot_id)
        tasks = sorted(scan.plan_files(), key=lambda t: t.file.file_path)
        worker = get_worker_info()
        if worker is not None:
            tasks = tasks[worker.id :: worker.num_workers]
        return [(scan, task) for task in tasks]

    def _batches(self) -> Iterator[pa.RecordBatch]:
        from pyiceberg.io.pyarrow import ArrowScan

        for scan, task in self._files():
            arrow_scan = ArrowScan(
                scan.table_metadata,
                scan.io,
                scan.projection(),
                scan.row_filter,
                scan.case_sensitive,
            )
            yield from arrow_scan.to_record_batches([task])

    def __iter__(self) -> Iterator[dict[str, Any]]:
        pending: list[pa.RecordBatch] = []
        size = 0
        for batch in self._batches():
            pending.append(batch)
            size += batch.num_rows
            while size >= self.batch_size:
                table = pa.Table.from_batches(pending)
                yield self._to_torch(table.slice(0, self.batch_size))
                rest = table.slice(self.batch_size)
                pending, size = rest.to_batches(), rest.num_rows
        if size:
            yield self._to_torch(pa.Table.from_batches(pending))

    def _to_torch(self, table: pa.Table) -> dict[str, Any]:
        columns = table.to_pydict()
        out: dict[str, Any] = {
            "impression_id": columns["impression_id"],
            "pin_id": columns["pin_id"],
            "event_time": columns["event_time"],
            "locale": columns["locale"],
            "teacher_version": columns["teacher_version"],
            "query": columns["query"],
            "probs": torch.tensor(columns["probs"], dtype=torch.float32),
            "label": torch.tensor(columns["label"], dtype=torch.long),
            "score": torch.tensor(columns["score"], dtype=torch.float32),
        }
        if self.with_text:
            out["pin_text"] = [
                build_pin_text(
                    title=columns["title"][i],
                    description=columns["description"][i],
                    caption=columns["caption"][i],
                    board_titles=columns["board_titles"][i],
                    top_queries=columns["top_queries"][i],
                    link_title=columns["link_title"][i],
                )
                for i in range(table.num_rows)
            ]
        return out
