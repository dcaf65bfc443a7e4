"""The evaluation report: `report.md` plus confusion-matrix and calibration PNGs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from serving.teacher.evaluate import EvalResult  # noqa: E402


def confusion(labels: np.ndarray, predicted: np.ndarray, scale: int) -> np.ndarray:
    matrix = np.zeros((scale, scale), dtype=np.int64)
    np.add.at(matrix, (labels - 1, predicted - 1), 1)
    return matrix


def _plot_confusion(matrix: np.ndarray, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    scale = matrix.shape[0]
    ticks = np.arange(scale)
    ax.set_xticks(ticks, [str(k + 1) for k in ticks])
    ax.set_yticks(ticks, [str(k + 1) for k in ticks])
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(title, fontsize=9)
    top = matrix.max() or 1
    for i in range(scale):
        for j in range(scale):
            color = "white" if matrix[i, j] > top / 2 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibration_bins(
    labels: np.ndarray, probs: np.ndarray, bins: int = 10
) -> list[dict[str, list[float]]]:
    """Per class: mean predicted probability vs observed frequency, in equal-width bins."""
    out = []
    for k in range(probs.shape[1]):
        p = probs[:, k]
        hit = (labels == k + 1).astype(np.float64)
        edges = np.linspace(0, 1, bins + 1)
        which = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
        mean_p, freq, count = [], [], []
        for b in range(bins):
            rows = which == b
            if rows.any():
                mean_p.append(float(p[rows].mean()))
                freq.append(float(hit[rows].mean()))
                count.append(float(rows.sum()))
        out.append({"predicted": mean_p, "observed": freq, "count": count})
    return out


def expected_calibration_error(labels: np.ndarray, probs: np.ndarray) -> float:
    total, n = 0.0, len(labels)
    for curve in calibration_bins(labels, probs):
        for p, f, c in zip(curve["predicted"], curve["observed"], curve["count"], strict=True):
            total += c / n * abs(p - f)
    return total / probs.shape[1]


def _plot_calibration(labels: np.ndarray, probs: np.ndarray, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    for k, curve in enumerate(calibration_bins(labels, probs)):
        ax.plot(curve["predicted"], curve["observed"], marker="o", markersize=3, label=f"{k + 1}")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(title, fontsize=9)
    ax.legend(title="label", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(value: object) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_report(result: EvalResult, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    summary = result.summary()
    summary["ece"] = expected_calibration_error(result.labels, result.probs)
    matrix = confusion(result.labels, result.predicted, result.scale)
    _plot_confusion(matrix, out / "confusion.png", f"teacher: {result.mode}")
    _plot_calibration(result.labels, result.probs, out / "calibration.png", f"{result.mode}")
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    if result.features is not None:
        np.savez_compressed(
            out / "features.npz",
            features=result.features,
            names=np.asarray(result.feature_names),
            labels=result.labels,
            queries=np.asarray(result.queries),
            probs=result.probs,
        )
    rows = ["| metric | teacher | BM25 | bi-encoder (zero-shot) |", "| --- | --- | --- | --- |"]
    for key in ("ndcg10", "qwk", "accuracy"):
        rows.append(
            f"| {key} | {_fmt(summary[key])} | {_fmt(summary['bm25_' + key])} | "
            f"{_fmt(summary['biencoder_' + key])} |"
        )
    # summary() keeps each auroc_by_threshold dict (threshold -> AUROC) as it came.
    teacher_auroc, bm25_auroc, bi_auroc = (
        cast(dict[str, float], summary[key]) for key in ("auroc", "bm25_auroc", "biencoder_auroc")
    )
    for t, value in teacher_auroc.items():
        rows.append(
            f"| AUROC label {t} | {_fmt(value)} | {_fmt(bm25_auroc[t])} | {_fmt(bi_auroc[t])} |"
        )
    fold_rows = []
    if result.folds:
        fold_rows = [
            "",
            "## Folds",
            "",
            "| fold | rows | queries | nDCG@10 | QWK | accuracy | BM25 nDCG@10 | bi-enc nDCG@10 |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for f in result.folds:
            fold_rows.append(
                f"| {f['fold']} | {f['rows']} | {f['queries']} | {_fmt(f['ndcg10'])} | "
                f"{_fmt(f['qwk'])} | {_fmt(f['accuracy'])} | {_fmt(f['bm25_ndcg10'])} | "
                f"{_fmt(f['biencoder_ndcg10'])} |"
            )
    matrix_rows = [
        "| true \\ predicted | " + " | ".join(str(k + 1) for k in range(result.scale)) + " |"
    ]
    matrix_rows.append("| --- " * (result.scale + 1) + "|")
    for i in range(result.scale):
        matrix_rows.append(f"| {i + 1} | " + " | ".join(str(v) for v in matrix[i]) + " |")
    text = [
        f"# Teacher evaluation: {result.mode}",
        "",
        f"- data: `{result.source}` ({summary['rows']} rows, {summary['queries']} queries)",
        f"- teacher: {result.teacher}",
        "- nDCG@10: mean over queries, gains 2^(label-1)-1, ties broken pessimistically",
        "- baselines' labels: their scores cut at the training label distribution's quantiles",
        f"- expected calibration error (mean over labels): {summary['ece']:.3f}",
        f"- took {summary['seconds']} s",
        "",
        *rows,
        *fold_rows,
        "",
        "## Confusion matrix (teacher)",
        "",
        *matrix_rows,
        "",
        "![confusion](confusion.png) ![calibration](calibration.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(text))
    return out / "report.md"
