"""The small stacked model on top of the cross-encoder: a multinomial logistic regression
over the cross-encoder's log-probabilities, the bi-encoder cosine and lexical features,
plus class thresholds on the expected grade chosen for quadratic weighted kappa.

Fitted with scikit-learn at training time; stored as plain JSON numbers and applied with
numpy, so the served model needs neither scikit-learn nor pickles.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel
from sklearn.linear_model import LogisticRegression

from serving.teacher.metrics import qwk


def expected_grade(probs: np.ndarray) -> np.ndarray:
    return probs @ np.arange(1, probs.shape[1] + 1, dtype=np.float64)


def apply_thresholds(grades: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    return 1 + np.searchsorted(np.asarray(thresholds), grades, side="right")


def fit_thresholds(grades: np.ndarray, labels: np.ndarray, scale: int) -> list[float]:
    """Cut points on the expected grade maximizing QWK (coordinate search from the
    cut points that reproduce the label distribution). Argmax under-predicts rare
    classes; kappa rewards getting the order and the spread right."""
    quantiles = np.cumsum(np.bincount(labels, minlength=scale + 1)[1:])[:-1] / len(labels)
    cuts = list(np.quantile(grades, quantiles))
    best = qwk(labels, apply_thresholds(grades, cuts), scale)
    candidates = np.unique(np.quantile(grades, np.linspace(0.005, 0.995, 200)))
    for _ in range(3):
        for i in range(len(cuts)):
            low = cuts[i - 1] if i > 0 else -np.inf
            high = cuts[i + 1] if i + 1 < len(cuts) else np.inf
            for c in candidates[(candidates > low) & (candidates < high)]:
                trial = cuts.copy()
                trial[i] = float(c)
                value = qwk(labels, apply_thresholds(grades, trial), scale)
                if value > best + 1e-9:
                    best, cuts = value, trial
    return [float(c) for c in cuts]


class Stacker(BaseModel):
    features: list[str]
    mean: list[float]
    std: list[float]
    coef: list[list[float]]
    intercept: list[float]
    thresholds: list[float]

    @property
    def scale(self) -> int:
        return len(self.intercept)

    def probs(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        logits = z @ np.asarray(self.coef).T + np.asarray(self.intercept)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def labels(self, probs: np.ndarray) -> np.ndarray:
        return apply_thresholds(expected_grade(probs), self.thresholds)

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: Path) -> Stacker:
        return cls.model_validate_json(path.read_text())


def _fit_lr(x: np.ndarray, y: np.ndarray, w: np.ndarray, c: float) -> tuple:
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    lr = LogisticRegression(C=c, max_iter=2000)
    lr.fit((x - mean) / std, y, sample_weight=w)
    return mean, std, lr


def fit_stacker(
    x: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray,
    features: Sequence[str],
    scale: int,
    weights: np.ndarray | None = None,
    c: float = 0.5,
    folds: int = 5,
) -> Stacker:
    """Fit on held-out rows; thresholds come from grouped out-of-fold predictions, so they
    are tuned on predictions the regression did not see while fitting."""
    w = np.ones(len(labels)) if weights is None else weights
    oof = np.zeros((len(labels), scale))
    unique = np.unique(groups)
    fold_of = {g: i % folds for i, g in enumerate(np.random.default_rng(0).permutation(unique))}
    fold = np.asarray([fold_of[g] for g in groups])
    for k in range(min(folds, len(unique))):
        train, test = fold != k, fold == k
        if len(np.unique(labels[train])) < scale:
            continue
        mean, std, lr = _fit_lr(x[train], labels[train], w[train], c)
        oof[test] = _full_probs(lr, (x[test] - mean) / std, scale)
    covered = oof.sum(axis=1) > 0
    mean, std, lr = _fit_lr(x, labels, w, c)
    full = _full_probs(lr, (x - mean) / std, scale)
    grades = expected_grade(np.where(covered[:, None], oof, full))
    thresholds = fit_thresholds(grades, labels, scale)
    coef = np.zeros((scale, x.shape[1]))
    intercept = np.full(scale, -30.0)  # classes never seen in training stay improbable
    for row, cls in enumerate(lr.classes_):
        coef[cls - 1] = lr.coef_[row] if len(lr.classes_) > 2 else lr.coef_[0] * (row * 2 - 1)
        intercept[cls - 1] = (
            lr.intercept_[row] if len(lr.classes_) > 2 else lr.intercept_[0] * (row * 2 - 1)
        )
    if len(lr.classes_) == 2:  # binary sklearn LR: p(c1) = sigmoid(z); split symmetrically
        coef[lr.classes_ - 1] /= 2.0
        intercept[lr.classes_ - 1] /= 2.0
    return Stacker(
        features=list(features),
        mean=mean.tolist(),
        std=std.tolist(),
        coef=coef.tolist(),
        intercept=intercept.tolist(),
        thresholds=thresholds,
    )


def _full_probs(lr: LogisticRegression, z: np.ndarray, scale: int) -> np.ndarray:
    out = np.zeros((len(z), scale))
    out[:, lr.classes_ - 1] = lr.predict_proba(z)
    return out
