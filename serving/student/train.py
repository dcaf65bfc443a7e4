"""Students from the platform's training sets (Iceberg tables `freshlabel dataset build`
writes): read one snapshot of the table through `TrainingSetDataset`, compute the student's
features with the labeling teacher's bi-encoder and statistics, distill, and write a
student directory whose manifest names that snapshot, the teacher version and the feature
versions, so the same command on the same snapshot rebuilds the same student.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from infra.catalog import open_catalog
from infra.config import Settings
from serving.dataset import TrainingSetDataset
from serving.student.features import BM25_FILE, Featurizer, StudentInputs
from serving.student.model import Student, StudentConfig, StudentError, train_student


@dataclass
class TrainingRows:
    """A training set's rows in memory: what a student trains or is evaluated on."""

    impression_ids: list[str]
    pin_ids: list[str]
    event_times: list[datetime]
    locales: list[str]
    queries: list[str]
    pin_texts: list[str]
    probs: np.ndarray  # (n, scale) the teacher's probabilities
    labels: np.ndarray  # (n,) the teacher's argmax label, 1-based

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def scale(self) -> int:
        return int(self.probs.shape[1])


def trained_version(served: str) -> str:
    """The trained teacher behind a served version: `t+onnx-int8` -> `t`."""
    return served.split("+", 1)[0]


def table_versions(settings: Settings, table: str, snapshot_id: int | None = None) -> list[str]:
    """The teacher versions whose labels a training-set table holds."""
    scan = _table(settings, table).scan(
        selected_fields=("teacher_version",), snapshot_id=snapshot_id
    )
    column = scan.to_arrow().column("teacher_version")
    return sorted(set(column.to_pylist()))


def _table(settings: Settings, table: str):  # type: ignore[no-untyped-def]
    from pyiceberg.exceptions import NoSuchTableError

    name = f"{settings.catalog.namespace}.{table}"
    try:
        return open_catalog(settings).load_table(name)
    except NoSuchTableError as exc:
        raise StudentError(
            f"no training set {name}; build one with "
            f"`freshlabel dataset build --teacher-version V --out {table}`"
        ) from exc


def pick_version(settings: Settings, table: str, snapshot_id: int, wanted: str | None) -> str:
    """`wanted`, or the table's only teacher version.

    Raises:
        StudentError: the version is not in the table, or the table holds several and
            none was named.
    """
    versions = table_versions(settings, table, snapshot_id)
    if wanted is not None:
        if wanted not in versions:
            raise StudentError(
                f"training set {table} has no labels of teacher {wanted!r}; it has "
                f"{', '.join(versions) or 'none'}"
            )
        return wanted
    if len(versions) != 1:
        raise StudentError(
            f"training set {table} holds labels of {len(versions)} teacher versions "
            f"({', '.join(versions) or 'none'}); pick one with --teacher-version"
        )
    return versions[0]


def read_rows(
    settings: Settings,
    table: str,
    teacher_version: str,
    snapshot_id: int | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> TrainingRows:
    """Every row of one teacher version (optionally a time window) of a training set."""
    data = TrainingSetDataset(
        settings,
        table,
        teacher_version=teacher_version,
        batch_size=4096,
        snapshot_id=snapshot_id,
        since=since,
        until=until,
    )
    keys = ("impression_id", "pin_id", "event_time", "locale", "query", "pin_text")
    columns: dict[str, list] = {k: [] for k in keys}  # type: ignore[type-arg]
    probs: list[np.ndarray] = []
    for batch in data:
        for k in keys:
            columns[k] += batch[k]
        probs.append(batch["probs"].numpy())
    if not probs:
        window = f" between {since} and {until}" if since or until else ""
        raise StudentError(f"training set {table} has no rows of teacher {teacher_version}{window}")
    p = np.concatenate(probs)
    return TrainingRows(
        columns["impression_id"],
        columns["pin_id"],
        columns["event_time"],
        columns["locale"],
        columns["query"],
        columns["pin_text"],
        p,
        (p.argmax(axis=1) + 1).astype(np.int64),
    )


def featurize(
    featurizer: Featurizer,
    queries: list[str],
    pin_texts: list[str],
    chunk: int = 2048,
    progress: bool = False,
) -> StudentInputs:
    """Student inputs for many pairs, in chunks, with a progress bar on stderr (pairs)."""
    from infra.progress import progress_bar

    parts = []
    with progress_bar(total=len(queries), desc="features", unit="pair", show=progress) as bar:
        for start in range(0, len(queries), chunk):
            parts.append(
                featurizer.inputs(queries[start : start + chunk], pin_texts[start : start + chunk])
            )
            bar.update(len(parts[-1]))
    return StudentInputs.concat(parts)


def check_teacher(featurizer: Featurizer, teacher_version: str) -> None:
    """The featurizer's teacher must be the one whose labels the student learns.

    Raises:
        StudentError: names both versions and the fix.
    """
    trained = trained_version(teacher_version)
    if featurizer.manifest.version != trained:
        raise StudentError(
            f"the labels come from teacher {teacher_version} but --teacher "
            f"{featurizer.teacher_dir} is {featurizer.manifest.version}: compute features with "
            "the labeling teacher's directory"
        )


def train_from_table(
    settings: Settings,
    table: str,
    out: Path,
    teacher_dir: Path,
    teacher_version: str | None = None,
    until: datetime | None = None,
    config: StudentConfig | None = None,
    version: str | None = None,
    progress: Callable[[str], None] | None = None,
    snapshot_id: int | None = None,
) -> Student:
    """Train a student on a training-set table and write it to `out`.

    Args:
        settings: the platform settings (catalog).
        table: the training-set table (`freshlabel dataset build --out TABLE`).
        out: the student directory to write.
        teacher_dir: the labeling teacher's directory (bi-encoder, BM25 statistics).
        teacher_version: whose labels to learn (default: the table's only version).
        until: only impressions before this time (the rest is for evaluation).
        config: training settings.
        version: the student's name.
        progress: called with one-line progress messages; bars go to stderr when set.
        snapshot_id: the table's Iceberg snapshot to read (default: the current one); a
            student's manifest records the one it read, to rebuild it exactly.

    Returns:
        The trained student (also saved in `out`).

    Raises:
        StudentError: no such table, ambiguous or unknown teacher version, no rows, or a
            teacher directory that is not the labeling teacher.
    """
    say = progress or (lambda _m: None)
    config = config or StudentConfig()
    iceberg = _table(settings, table)
    snapshot = (
        iceberg.current_snapshot() if snapshot_id is None else iceberg.snapshot_by_id(snapshot_id)
    )
    if snapshot is None:
        raise StudentError(
            f"training set {table} has no snapshot {snapshot_id}; its manifest may name one "
            "that table maintenance expired"
            if snapshot_id is not None
            else f"training set {table} is empty (no snapshot)"
        )
    teacher_version = pick_version(settings, table, snapshot.snapshot_id, teacher_version)
    featurizer = Featurizer.from_teacher(teacher_dir)
    check_teacher(featurizer, teacher_version)
    rows = read_rows(settings, table, teacher_version, snapshot.snapshot_id, until=until)
    say(f"{table} snapshot {snapshot.snapshot_id}: {len(rows)} rows of {teacher_version}")
    inputs = featurize(featurizer, rows.queries, rows.pin_texts, progress=progress is not None)
    student = train_student(
        inputs,
        rows.scale,
        probs=rows.probs,
        labels=rows.labels,
        config=config,
        version=version,
        progress=progress is not None,
    )
    student.manifest.teacher_version = teacher_version
    student.manifest.feature_versions = featurizer.versions()
    student.manifest.training_set = {
        "catalog": settings.catalog.name,
        "namespace": settings.catalog.namespace,
        "table": table,
        "snapshot_id": snapshot.snapshot_id,
        "teacher_version": teacher_version,
        "until": until.isoformat() if until else None,
        "rows": len(rows),
        "event_time_min": min(rows.event_times).isoformat(),
        "event_time_max": max(rows.event_times).isoformat(),
        "targets": config.targets,
    }
    student.save(out, bm25_file=Path(teacher_dir) / BM25_FILE)
    say(
        f"student {student.version}: best epoch {student.manifest.training['best_epoch']}, "
        f"validation loss {student.manifest.training['best_val_loss']:.4f} -> {out}"
    )
    return student
