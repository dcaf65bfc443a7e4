"""`freshlabel teacher eval`: the teacher against BM25 and the zero-shot bi-encoder on the
same rows, optionally as query-grouped K-fold cross-validation, with a written report.

Baselines produce a score, not a label. To give them a QWK and accuracy without peeking at
the evaluated labels, their scores are cut at the quantiles that reproduce the label
distribution the teacher was trained on (in CV: of the training folds).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from serving.teacher.data import LabeledPairs, query_folds
from serving.teacher.encoders import BiEncoder, cached_logits
from serving.teacher.lexical import Bm25Stats, terms
from serving.teacher.metrics import label_metrics
from serving.teacher.model import Teacher
from serving.teacher.onnx_runtime import QUANTIZE_MODES, RUNTIMES, check_choice
from serving.teacher.train import TrainConfig, build_cache, subset, train_teacher

log = logging.getLogger(__name__)


class EvalResult(BaseModel):
    """Pooled predictions of one evaluation (plain or cross-validated) and its metrics."""

    model_config = {"arbitrary_types_allowed": True}

    source: str
    scale: int
    teacher: str
    mode: str
    queries: list[str]
    labels: np.ndarray
    probs: np.ndarray
    predicted: np.ndarray
    scores: dict[str, np.ndarray]  # teacher, bm25, biencoder
    baseline_labels: dict[str, np.ndarray]
    folds: list[dict[str, object]] = Field(default_factory=list)
    seconds: float = 0.0
    # The stacker's inputs per row (saved with the report for offline analysis).
    features: np.ndarray | None = None
    feature_names: list[str] = Field(default_factory=list)

    def summary(self) -> dict[str, object]:
        teacher = label_metrics(
            self.labels, self.predicted, self.scores["teacher"], self.queries, self.scale
        )
        out: dict[str, object] = {
            "source": self.source,
            "teacher": self.teacher,
            "mode": self.mode,
            "rows": len(self.labels),
            "queries": len(set(self.queries)),
            **teacher,
        }
        for name in ("bm25", "biencoder"):
            base = label_metrics(
                self.labels, self.baseline_labels[name], self.scores[name], self.queries, self.scale
            )
            for key, value in base.items():
                out[f"{name}_{key}"] = value
        if self.folds:
            out["folds"] = self.folds
        out["seconds"] = round(self.seconds, 1)
        return out


def bm25_scores(queries: Sequence[str], pin_texts: Sequence[str]) -> np.ndarray:
    """BM25 over the evaluated pins themselves (the classic baseline's own corpus)."""
    stats = Bm25Stats.fit(pin_texts)
    return np.asarray(
        [stats.score(terms(q), terms(p)) for q, p in zip(queries, pin_texts, strict=True)]
    )


def quantile_labels(scores: np.ndarray, label_counts: Sequence[int] | np.ndarray) -> np.ndarray:
    """Labels 1..K for scores, cut where the reference label distribution says."""
    counts = np.asarray(label_counts, dtype=np.float64)
    cuts = np.quantile(scores, np.cumsum(counts)[:-1] / counts.sum())
    return 1 + np.searchsorted(cuts, scores, side="right")


def _label_counts(labels: np.ndarray, scale: int) -> list[int]:
    return np.bincount(labels, minlength=scale + 1)[1:].tolist()


def evaluate(
    teacher: Teacher,
    pairs: LabeledPairs,
    bi_cosine: np.ndarray | None = None,
    logits: np.ndarray | None = None,
) -> EvalResult:
    started = time.monotonic()
    if pairs.scale > teacher.scale:
        raise ValueError(
            f"{pairs.source} has labels up to {pairs.scale} but teacher {teacher.version} "
            f"predicts 1..{teacher.scale}; evaluate it on data of its own scale"
        )
    if bi_cosine is None:
        bi = teacher.bi_encoder or BiEncoder.load(max_length=teacher.manifest.max_length)
        bi_cosine = bi.cosine(pairs.queries, pairs.pin_texts)
    x = teacher.features(pairs.queries, pairs.pin_texts, logits=logits, bi_cosine=bi_cosine)
    pred = teacher.predict_features(x)
    counts = teacher.manifest.data.get("label_counts")
    if not isinstance(counts, dict):
        counts = {}
    reference = [int(counts.get(str(k), 0)) for k in range(1, teacher.scale + 1)]
    if sum(reference) == 0:
        reference = _label_counts(pairs.labels, teacher.scale)
    bm25 = bm25_scores(pairs.queries, pairs.pin_texts)
    return EvalResult(
        source=pairs.source,
        scale=teacher.scale,
        teacher=teacher.version,
        mode="holdout",
        queries=pairs.queries,
        labels=pairs.labels,
        probs=pred.probs,
        predicted=pred.label,
        scores={"teacher": pred.score, "bm25": bm25, "biencoder": bi_cosine},
        baseline_labels={
            "bm25": quantile_labels(bm25, reference),
            "biencoder": quantile_labels(bi_cosine, reference),
        },
        seconds=time.monotonic() - started,
        features=x,
        feature_names=teacher.stacker.features,
    )


def cross_validate(
    pairs: LabeledPairs,
    k: int,
    config: TrainConfig,
    progress: Callable[[str], None] = log.info,
    work_dir: Path | None = None,
    cache_dir: Path | None = None,
    runtime: str = "torch",
    quantize: str = "none",
    on_fold: Callable[[int, Path, LabeledPairs, np.ndarray], None] | None = None,
) -> EvalResult:
    """Query-grouped K-fold CV: K teachers, each trained (with its own inner validation
    split) on K-1 folds and scored on the held-out fold. The frozen bi-encoder cosine is
    computed once for all rows and shared by every fold (it does not depend on training).

    Args:
        pairs: the labeled rows.
        k: number of query-grouped folds.
        config: the training recipe every fold runs.
        progress: receives one line per stage.
        work_dir: where the fold teachers are written (a temporary folder inside it).
        cache_dir: the frozen-layer cache folder (reused across runs).
        runtime, quantize: what scores the held-out rows. "torch"/"none" finishes the
            forward pass from the cached frozen layers (the same numbers as a full eager
            pass); anything else loads each fold's teacher in that runtime (exporting its
            ONNX graphs) and runs the whole teacher on the held-out rows, so the metrics
            are those of the served path.
        on_fold: called as `on_fold(fold, teacher_dir, test_pairs, test_mask)` after each
            fold is scored, while its teacher directory still exists (e.g. to score the
            same held-out rows with other runtimes: benchmarks/bench_teacher_int8.py).

    Returns:
        The pooled out-of-fold predictions, metrics per fold included.
    """
    check_choice("runtime", runtime, RUNTIMES)
    check_choice("quantize", quantize, QUANTIZE_MODES)
    served_path = (runtime, quantize) != ("torch", "none")
    started = time.monotonic()
    progress(f"caching frozen layers + bi-encoder cosine for {len(pairs.frame)} rows (once)")
    cache = build_cache(pairs, config, progress, cache_dir)
    bi_cosine = cache.bi_cosine
    if bi_cosine is None:
        bi = BiEncoder.load(max_length=config.max_length, pin_view=config.bi_encoder_view())
        bi_cosine = bi.cosine(pairs.queries, pairs.pin_texts)
    fold = query_folds(pairs.queries, k, config.seed + 1)
    n, scale = len(pairs.frame), pairs.scale
    probs = np.zeros((n, scale), dtype=np.float32)
    predicted = np.zeros(n, dtype=np.int64)
    teacher_score = np.zeros(n, dtype=np.float32)
    bm25 = np.zeros(n)
    baseline_labels = {"bm25": np.zeros(n, np.int64), "biencoder": np.zeros(n, np.int64)}
    folds: list[dict[str, object]] = []
    features: np.ndarray | None = None
    names: list[str] = []
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for f in range(k):
            train_mask, test_mask = fold != f, fold == f
            train, test = subset(pairs, train_mask), subset(pairs, test_mask)
            progress(f"fold {f + 1}/{k}: train {len(train.frame)} rows, test {len(test.frame)}")
            fold_started = time.monotonic()
            manifest = train_teacher(
                train,
                Path(tmp) / f"fold{f}",
                config,
                version=f"cv-fold{f}",
                cache=cache.subset(train_mask),
                progress=progress,
            )
            teacher = Teacher.load(
                Path(tmp) / f"fold{f}",
                batch_size=config.infer_batch_size,
                runtime=runtime,
                quantize=quantize,
            )
            test_cache = cache.subset(test_mask)
            logits = None
            if served_path:
                # The fold's teacher in the evaluated runtime scores its held-out rows end
                # to end (both encoders); nothing cached by torch stands in for it.
                result = evaluate(teacher, test)
            else:
                if test_cache.frozen is not None:
                    logits = cached_logits(
                        teacher.cross_encoder.model,
                        test_cache.frozen,
                        test_cache.start_layer,
                        config.infer_batch_size,
                    )
                result = evaluate(teacher, test, bi_cosine=bi_cosine[test_mask], logits=logits)
            if result.features is not None:
                if features is None:
                    features = np.zeros((n, result.features.shape[1]))
                features[test_mask] = result.features
                names = result.feature_names
            if on_fold is not None:
                on_fold(f, Path(tmp) / f"fold{f}", test, test_mask)
            probs[test_mask] = result.probs
            predicted[test_mask] = result.predicted
            teacher_score[test_mask] = result.scores["teacher"]
            bm25[test_mask] = result.scores["bm25"]
            counts = _label_counts(train.labels, scale)
            baseline_labels["bm25"][test_mask] = quantile_labels(result.scores["bm25"], counts)
            baseline_labels["biencoder"][test_mask] = quantile_labels(bi_cosine[test_mask], counts)
            summary = result.summary()
            folds.append(
                {
                    "fold": f,
                    "rows": int(test_mask.sum()),
                    "queries": len(set(test.queries)),
                    "seconds": round(time.monotonic() - fold_started, 1),
                    "train_pairs_per_s": round(manifest.timings["train_pairs_per_s"], 2),
                    **{
                        key: summary[key]
                        for key in (
                            "accuracy",
                            "qwk",
                            "ndcg10",
                            "bm25_ndcg10",
                            "bm25_qwk",
                            "biencoder_ndcg10",
                            "biencoder_qwk",
                        )
                    },
                }
            )
            progress(f"fold {f + 1}/{k}: {json.dumps(folds[-1])}")
    return EvalResult(
        source=pairs.source,
        scale=scale,
        teacher=f"{k}-fold CV of the training recipe ({config.epochs} epoch(s), "
        f"max_length {config.max_length}; held-out rows scored by {runtime}/{quantize})",
        mode=f"cv{k}",
        queries=pairs.queries,
        labels=pairs.labels,
        probs=probs,
        predicted=predicted,
        scores={"teacher": teacher_score, "bm25": bm25, "biencoder": bi_cosine},
        baseline_labels=baseline_labels,
        folds=folds,
        seconds=time.monotonic() - started,
        features=features,
        feature_names=names,
    )
