"""Label-quality metrics shared by training, evaluation and the CV report."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import cohen_kappa_score, roc_auc_score


def qwk(labels: np.ndarray, predicted: np.ndarray, scale: int) -> float:
    return float(
        cohen_kappa_score(labels, predicted, weights="quadratic", labels=list(range(1, scale + 1)))
    )


def dcg(gains: np.ndarray) -> float:
    discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
    return float((gains * discounts).sum())


def ndcg_at(labels: np.ndarray, scores: np.ndarray, queries: Sequence[str], k: int = 10) -> float:
    """Mean over queries of nDCG@k with exponential gains 2^(label-1) - 1 (label 1 = 0).

    Ties in the score are broken by the worse label first (no credit for lucky order).
    Queries whose rows all have the lowest label have no ideal gain and are skipped.
    """
    frame_q = np.asarray(queries)
    values = []
    for query in np.unique(frame_q):
        rows = frame_q == query
        gains = np.exp2(labels[rows] - 1) - 1.0
        order = np.lexsort((gains, -scores[rows]))
        ideal = dcg(np.sort(gains)[::-1][:k])
        if ideal > 0:
            values.append(dcg(gains[order][:k]) / ideal)
    return float(np.mean(values)) if values else float("nan")


def auroc_by_threshold(labels: np.ndarray, scores: np.ndarray, scale: int) -> dict[str, float]:
    """AUROC of the score for `label >= t`, for each binarization t = 2..scale."""
    out: dict[str, float] = {}
    for t in range(2, scale + 1):
        positive = labels >= t
        if positive.all() or not positive.any():
            out[f">={t}"] = float("nan")
        else:
            out[f">={t}"] = float(roc_auc_score(positive, scores))
    return out


def label_metrics(
    labels: np.ndarray,
    predicted: np.ndarray,
    scores: np.ndarray,
    queries: Sequence[str],
    scale: int,
) -> dict[str, object]:
    return {
        "accuracy": float((labels == predicted).mean()),
        "qwk": qwk(labels, predicted, scale),
        "ndcg10": ndcg_at(labels, scores, queries, 10),
        "auroc": auroc_by_threshold(labels, scores, scale),
    }
