"""The small stacked model on top of the cross-encoder, in two stages, plus class
thresholds on the expected grade chosen for quadratic weighted kappa.

1. base: a multinomial logistic regression over the features nothing was trained for
   (bi-encoder cosine, BM25, term coverage). Fitted on *every* training row.
2. top: a logistic regression over the base's log-probabilities and the cross-encoder's
   expected grade, fitted on the validation rows only (the cross-encoder's predictions on
   its own training rows are overconfident and would teach the stacker to trust it).

Fitting everything on the validation rows alone (a fifth of the data) starved the
stacker; query-grouped CV showed the two stages rank and grade better.

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


class LinearSoftmax(BaseModel):
    """Standardize, then multinomial logistic regression over labels 1..scale."""

    mean: list[float]
    std: list[float]
    coef: list[list[float]]
    intercept: list[float]

    def probs(self, x: np.ndarray) -> np.ndarray:
        z = (x - np.asarray(self.mean)) / np.asarray(self.std)
        logits = z @ np.asarray(self.coef).T + np.asarray(self.intercept)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    @classmethod
    def fit(
        cls, x: np.ndarray, labels: np.ndarray, weights: np.ndarray, scale: int, c: float
    ) -> LinearSoftmax:
        mean = x.mean(axis=0)
        std = x.std(axis=0) + 1e-6
        lr = LogisticRegression(C=c, max_iter=2000)
        lr.fit((x - mean) / std, labels, sample_weight=weights)
        coef = np.zeros((scale, x.shape[1]))
        intercept = np.full(scale, -30.0)  # classes never seen in training stay improbable
        if len(lr.classes_) > 2:
            coef[lr.classes_ - 1] = lr.coef_
            intercept[lr.classes_ - 1] = lr.intercept_
        else:  # binary sklearn LR, p(c1) = sigmoid(z): split it symmetrically
            coef[lr.classes_ - 1] = np.vstack([-lr.coef_[0], lr.coef_[0]]) / 2.0
            intercept[lr.classes_ - 1] = np.asarray([-lr.intercept_[0], lr.intercept_[0]]) / 2.0
        return cls(
            mean=mean.tolist(), std=std.tolist(), coef=coef.tolist(), intercept=intercept.tolist()
        )


class Stacker(BaseModel):
    features: list[str]
    # Columns of the feature matrix each stage reads.
    base_columns: list[int]
    top_columns: list[int]
    base: LinearSoftmax
    top: LinearSoftmax
    thresholds: list[float]

    @property
    def scale(self) -> int:
        return len(self.top.intercept)

    def top_inputs(self, x: np.ndarray) -> np.ndarray:
        base = self.base.probs(x[:, self.base_columns])
        return np.column_stack([np.log(base + 1e-9), x[:, self.top_columns]])

    def probs(self, x: np.ndarray) -> np.ndarray:
        return self.top.probs(self.top_inputs(x))

    def labels(self, probs: np.ndarray) -> np.ndarray:
        return apply_thresholds(expected_grade(probs), self.thresholds)

    def save(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=1))

    @classmethod
    def load(cls, path: Path) -> Stacker:
        return cls.model_validate_json(path.read_text())


def fit_stacker(
    x_val: np.ndarray,
    labels_val: np.ndarray,
    groups_val: np.ndarray,
    features: Sequence[str],
    scale: int,
    base_features: Sequence[str],
    top_features: Sequence[str],
    x_all: np.ndarray | None = None,
    labels_all: np.ndarray | None = None,
    weights_val: np.ndarray | None = None,
    weights_all: np.ndarray | None = None,
    c: float = 0.1,
    folds: int = 5,
) -> Stacker:
    """`x_val`: every feature for the validation rows. `x_all`/`labels_all`: rows (all
    training rows) for the base stage; only their `base_features` columns are read.
    The thresholds come from query-grouped out-of-fold predictions of the top stage, so
    they are tuned on unseen queries."""
    names = list(features)
    base_columns = [names.index(f) for f in base_features]
    top_columns = [names.index(f) for f in top_features]
    if x_all is None or labels_all is None:
        x_all, labels_all, weights_all = x_val, labels_val, weights_val
    w_all = np.ones(len(labels_all)) if weights_all is None else weights_all
    w_val = np.ones(len(labels_val)) if weights_val is None else weights_val
    base = LinearSoftmax.fit(x_all[:, base_columns], labels_all, w_all, scale, c)
    probe = Stacker(
        features=list(features),
        base_columns=base_columns,
        top_columns=top_columns,
        base=base,
        top=base,  # placeholder until the top stage is fitted
        thresholds=[],
    )
    z = probe.top_inputs(x_val)
    oof = np.zeros((len(labels_val), scale))
    unique = np.unique(groups_val)
    order = np.random.default_rng(0).permutation(unique)
    fold_of = {g: i % folds for i, g in enumerate(order)}
    fold = np.asarray([fold_of[g] for g in groups_val])
    for k in range(min(folds, len(unique))):
        train, test = fold != k, fold == k
        if len(np.unique(labels_val[train])) < 2:
            continue
        oof[test] = LinearSoftmax.fit(z[train], labels_val[train], w_val[train], scale, c).probs(
            z[test]
        )
    top = LinearSoftmax.fit(z, labels_val, w_val, scale, c)
    covered = oof.sum(axis=1) > 0
    grades = expected_grade(np.where(covered[:, None], oof, top.probs(z)))
    return probe.model_copy(
        update={"top": top, "thresholds": fit_thresholds(grades, labels_val, scale)}
    )
