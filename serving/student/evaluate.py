"""`freshlabel student eval`: how close a student is to the truth and to its teacher, and
what it costs to serve.

Quality is measured on a training-set table's rows (by default those after the student's
training window): against the teacher's labels there, and, given a generated world's truth
directory, against the hidden grades of the same (query, pin) pairs. Alongside: the teacher
itself and the bi-encoder cosine (the best zero-shot feature) against the truth, so a
student's numbers have their ceiling and their floor beside them.

Serving cost is the student's own: features are precomputed (a search stack keeps one
embedding per query and per pin), so it times `Student.predict` on those inputs, in
batches and one pair a call, on this machine's CPU.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from infra.config import Settings
from serving.student.features import Featurizer, StudentInputs
from serving.student.model import Student, StudentError
from serving.student.train import check_teacher, featurize, read_rows
from serving.teacher.metrics import auroc_by_threshold, label_metrics, ndcg_at


def serving_cost(
    student: Student, inputs: StudentInputs, batch: int = 1024, calls: int = 500
) -> dict[str, float]:
    """Pairs/s of `predict` in batches of `batch`, and the latency of one-pair calls.

    Returns:
        `pairs_per_s` (batched, one thread of numpy's BLAS as the process has it),
        `request_p50_ms` and `request_p99_ms` (one pair a call).
    """
    n = len(inputs)
    if n == 0:
        raise StudentError("no pairs to time the student on")
    rows = np.arange(max(batch, 1)) % n
    block = inputs.take(rows)
    student.predict(block)  # warm up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0 or done < 4 * batch:
        student.predict(block)
        done += len(block)
    pairs_per_s = done / (time.perf_counter() - start)
    latencies = []
    for i in range(calls):
        one = inputs.take([i % n])
        t0 = time.perf_counter()
        student.predict(one)
        latencies.append((time.perf_counter() - t0) * 1000.0)
    return {
        "pairs_per_s": round(pairs_per_s, 1),
        "batch": batch,
        "request_p50_ms": round(float(np.percentile(latencies, 50)), 4),
        "request_p99_ms": round(float(np.percentile(latencies, 99)), 4),
    }


def _rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out[k] = _rounded(v)
        elif isinstance(v, float):
            out[k] = round(v, 4)
        else:
            out[k] = v
    return out


def evaluate_student(
    settings: Settings,
    student_dir: Path,
    table: str,
    teacher_dir: Path,
    truth_dir: Path | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Evaluate a student on a training-set table's rows.

    Args:
        settings: the platform settings (catalog).
        student_dir: the student to evaluate.
        table: a training-set table with labels of the student's teacher version.
        teacher_dir: the teacher's directory (the student's features come from it).
        truth_dir: a generated world's truth directory (hidden grades), if any.
        since: the first impression time evaluated (default: right after the student's
            training window, `manifest.training_set.event_time_max`).
        until: the end of the evaluation window (default: open).
        progress: progress bars on stderr.

    Returns:
        A JSON-able report: rows, `vs_teacher`, `vs_truth` (when a truth directory is
        given, with the teacher's and the bi-encoder cosine's numbers), `serving`.

    Raises:
        StudentError: no rows to evaluate, or features of another teacher.
    """
    from streams.generator.truth import load_truth

    student = Student.load(student_dir)
    teacher_version = student.manifest.teacher_version
    if teacher_version is None:
        raise StudentError(f"student {student.version} records no teacher version; retrain it")
    trained = student.manifest.training_set
    if since is None and trained.get("event_time_max"):
        # Strictly after the last training impression.
        since = datetime.fromisoformat(str(trained["event_time_max"])) + timedelta(microseconds=1)
    rows = read_rows(settings, table, teacher_version, since=since, until=until)
    last_trained = trained.get("event_time_max")
    seen = (
        sum(1 for t in rows.event_times if t.isoformat() <= str(last_trained))
        if last_trained and trained.get("table") == table
        else 0
    )
    featurizer = Featurizer.from_teacher(teacher_dir)
    check_teacher(featurizer, teacher_version)
    student.check_features(featurizer.versions())
    inputs = featurize(featurizer, rows.queries, rows.pin_texts, progress=progress)
    predicted = student.predict(inputs)
    scale = student.scale
    report: dict[str, Any] = {
        "student": student.version,
        "teacher_version": teacher_version,
        "table": table,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "rows": len(rows),
        "rows_inside_training_window": seen,
        "vs_teacher": _rounded(
            label_metrics(rows.labels, predicted.label, predicted.score, rows.queries, scale)
        ),
    }
    if truth_dir is not None:
        grades = load_truth(Path(truth_dir)).grades()
        keep = [
            i for i, key in enumerate(zip(rows.queries, rows.pin_ids, strict=True)) if key in grades
        ]
        if not keep:
            raise StudentError(
                f"none of the {len(rows)} rows' (query, pin) pairs is in the truth of "
                f"{truth_dir}: pass the truth directory of the world these impressions came from"
            )
        truth = np.array([grades[(rows.queries[i], rows.pin_ids[i])] for i in keep])
        queries = [rows.queries[i] for i in keep]
        cosine = inputs.pair[keep, 0]
        teacher_grade = rows.probs[keep] @ np.arange(1, rows.scale + 1)
        report["vs_truth"] = {
            "pairs": len(keep),
            "student": _rounded(
                label_metrics(truth, predicted.label[keep], predicted.score[keep], queries, scale)
            ),
            "teacher": _rounded(
                label_metrics(truth, rows.labels[keep], teacher_grade, queries, scale)
            ),
            "bi_cosine": _rounded(
                {
                    "ndcg10": ndcg_at(truth, cosine, queries, 10),
                    "auroc": auroc_by_threshold(truth, cosine, scale),
                }
            ),
        }
    report["serving"] = serving_cost(student, inputs)
    return report
