"""What students buy: more teacher labels (label scaling) and fresher ones (freshness).

    PYTHONPATH=. .venv/bin/python -m benchmarks.bench_students [--quick] [--json]
        [--seed 7 --impressions 70000 --sim-days 56 --share 1.0]
        [--human 1000 --eval 5000 --multiples 5,20,50]
        [--teacher DIR | --teacher-seed S --teacher-rows 5000 --teacher-epochs 2]
        [--fresh-day D --fresh-k K --fresh-rows 20000] [--epochs 30 --resamples 1000]

No Kafka, Flink or Triton: one seeded world is replayed in process (`collect_world_rows`:
every impression with the pin's text as of the impression's time, as the enrichment job
joins it, and the hidden true grade), a teacher labels every distinct (query, pin text)
pair once in process (ONNX int8, as served), and students are trained with
`serving.student.model.train_student` on the inputs the served teacher's embeddings give
(`serving.student.features.pair_features`, as the labeler builds them).

1. Label scaling. Held-out impressions (`--eval`, random, disjoint from every training
   set). A "human" sample of N impressions (`--human`) with their true grades: the 1x
   student (hard targets). The same N impressions with the teacher's probabilities (1x
   teacher, soft targets), then 5N, 20N, 50N other impressions with the teacher's
   probabilities (nested: each set contains the smaller ones). The teacher itself and the
   bi-encoder cosine (the best zero-shot feature) on the same held-out rows.
2. Freshness. Student A learns the teacher's labels of impressions before day D (frozen at
   D); student B those before day D+k (as continuous labeling gives), both on the same
   number of rows (`--fresh-rows`, a uniform sample of each window; B-recent: the last
   rows before D+k instead). A_truth and B_truth learn the true grades of A's and B's rows:
   what fresher labels could buy if they were perfect. All are evaluated on every
   impression from D+k on, overall and on queries of topics that emerged after D, with a
   query-level bootstrap interval of the gaps B - A, B_recent - A and B_truth - A_truth.

The teacher is trained, like `make demo`'s quick teacher, on the labeled sample of another
seed's world (`--teacher-seed`), or given with `--teacher DIR`. A trained teacher is kept
in `--work` and reused by a later run with the same teacher flags (`--fresh-teacher`
retrains). Everything is seeded: the same command gives the same numbers.

Progress goes to stderr; the tables (or, with `--json`, every number) to stdout; the JSON
is also written to `<work>/bench_students.json`, the plots to `--plot-dir` (docs/ by
default, the work folder with `--quick`).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from infra.config import PROJECT_ROOT, Settings
from serving.student.features import StudentInputs

SCALE = 4
ROW_COLUMNS = (
    "impression_id",
    "event_time",
    "day",
    "query",
    "pin_id",
    "position",
    "locale",
    "lang",
    "family",
    "topic",
    "season",
    "emerges_at",
    "emerges_day",
    "pin_text",
    "grade",
)


def log(message: str) -> None:
    print(f"[bench_students] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- world rows


def collect_world_rows(
    settings: Settings, share: float = 1.0, progress: bool = False
) -> pd.DataFrame:
    """Every impression of the seeded world of `settings.generator` (or a seeded `share`),
    one row each, in production order.

    The pin text is `build_pin_text` of the pin's features as of the impression's time
    (latest content and caption, top boards, top queries of the window: what the Flink
    enrichment job joins, `FeatureTracker`); `grade` is the hidden true grade of the
    (query, pin) pair. Query metadata comes from the world: `lang`, `family`, `topic`,
    `season` (a holiday's name or None), and for trend topics `emerges_at` (fraction of the
    run) and `emerges_day` (simulated day; NaN for topics that always exist). `day` is the
    impression's simulated day as a float (0 = `generator.start`).
    """
    from tqdm import tqdm

    from serving.labeler.labeler import teacher_input
    from streams.generator.sample import enriched_impressions
    from streams.generator.timeline import Timeline

    timeline = Timeline(settings.generator)
    world = timeline.world
    sim_days = settings.generator.sim_days
    columns: dict[str, list[Any]] = {c: [] for c in ROW_COLUMNS}
    bar = tqdm(desc="world", unit="imp", disable=not progress, mininterval=2.0)
    for row, grade in enriched_impressions(settings, share, timeline):
        bar.update(1)
        query = world.queries[world.query_by_text[row.query]]
        topic = world.topics[query.topic]
        emerges = topic.emerges_at
        values = {
            "impression_id": row.impression_id,
            "event_time": row.event_time,
            "day": (row.event_time - world.start).total_seconds() / 86400.0,
            "query": row.query,
            "pin_id": row.pin_id,
            "position": row.position,
            "locale": row.locale,
            "lang": query.lang,
            "family": topic.family,
            "topic": topic.id,
            "season": topic.season.name if topic.season is not None else None,
            "emerges_at": float("nan") if emerges is None else float(emerges),
            "emerges_day": float("nan") if emerges is None else float(emerges) * sim_days,
            "pin_text": teacher_input(row),
            "grade": grade,
        }
        for key, value in values.items():
            columns[key].append(value)
    bar.close()
    frame = pd.DataFrame(columns)
    frame["grade"] = frame["grade"].astype(np.int64)
    return frame


# --------------------------------------------------------------------------- metrics


def qwk_from_confusion(confusion: np.ndarray) -> np.ndarray | float:
    """Quadratic weighted kappa of confusion matrices (..., s, s) (rows: truth, columns:
    predicted), as sklearn's `cohen_kappa_score(weights="quadratic")` computes it; NaN where
    the expected disagreement is 0."""
    confusion = np.asarray(confusion, dtype=np.float64)
    s = confusion.shape[-1]
    i, j = np.meshgrid(np.arange(s), np.arange(s), indexing="ij")
    weights = (i - j) ** 2 / (s - 1) ** 2
    n = confusion.sum(axis=(-1, -2))
    expected = confusion.sum(axis=-1)[..., :, None] * confusion.sum(axis=-2)[..., None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = expected / n[..., None, None]
        observed_w = (weights * confusion).sum(axis=(-1, -2))
        expected_w = (weights * expected).sum(axis=(-1, -2))
        kappa = np.where(expected_w > 0, 1.0 - observed_w / expected_w, np.nan)
    return float(kappa) if kappa.ndim == 0 else kappa


def per_query_ndcg(
    labels: np.ndarray, scores: np.ndarray, query_index: np.ndarray, queries: int, k: int = 10
) -> np.ndarray:
    """nDCG@k of each query (index 0..queries-1), exactly as `metrics.ndcg_at` computes it
    (gains 2^(label-1) - 1, ties broken by the worse label first); NaN for queries with no
    ideal gain (skipped by `ndcg_at`'s mean)."""
    from serving.teacher.metrics import dcg

    out = np.full(queries, np.nan)
    order = np.argsort(query_index, kind="stable")
    bounds = np.searchsorted(query_index[order], np.arange(queries + 1))
    for q in range(queries):
        rows = order[bounds[q] : bounds[q + 1]]
        if not len(rows):
            continue
        gains = np.exp2(labels[rows] - 1) - 1.0
        ideal = dcg(np.sort(gains)[::-1][:k])
        if ideal > 0:
            ranked = np.lexsort((gains, -scores[rows]))
            out[q] = dcg(gains[ranked][:k]) / ideal
    return out


def _confusions(
    truth: np.ndarray, predicted: np.ndarray, query_index: np.ndarray, queries: int, scale: int
) -> np.ndarray:
    """(queries, scale * scale) counts of (truth, predicted) per query."""
    cell = query_index * scale * scale + (truth - 1) * scale + (predicted - 1)
    counts = np.bincount(cell, minlength=queries * scale * scale)
    return counts.reshape(queries, scale * scale).astype(np.float64)


def _interval(samples: np.ndarray, alpha: float) -> list[float]:
    samples = samples[np.isfinite(samples)]
    if not len(samples):
        return [float("nan"), float("nan")]
    lo, hi = np.percentile(samples, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return [round(float(lo), 4), round(float(hi), 4)]


def bootstrap_gap(
    truth: np.ndarray,
    queries: Sequence[str],
    a_label: np.ndarray,
    a_score: np.ndarray,
    b_label: np.ndarray,
    b_score: np.ndarray,
    scale: int = SCALE,
    resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """B minus A in nDCG@10 and QWK against `truth`, with a query-level bootstrap interval.

    Queries are resampled with replacement (`resamples` times, seeded), each bringing all
    its rows, so rows of one query are never treated as independent. nDCG@10 is the mean
    of the resampled queries' nDCG (as `metrics.ndcg_at`); QWK is computed on the resampled
    rows (the sum of the queries' confusion matrices). The point estimates are the plain
    metrics on all rows; the interval is the percentile interval of the resampled gaps.
    """
    truth = np.asarray(truth, dtype=np.int64)
    a_label = np.asarray(a_label, dtype=np.int64)
    b_label = np.asarray(b_label, dtype=np.int64)
    names, query_index = np.unique(np.asarray(queries), return_inverse=True)
    q = len(names)
    nd_a = per_query_ndcg(truth, np.asarray(a_score, float), query_index, q)
    nd_b = per_query_ndcg(truth, np.asarray(b_score, float), query_index, q)
    valid = np.isfinite(nd_a) & np.isfinite(nd_b)
    conf_a = _confusions(truth, a_label, query_index, q, scale)
    conf_b = _confusions(truth, b_label, query_index, q, scale)

    rng = np.random.default_rng(seed)
    counts = rng.multinomial(q, np.full(q, 1.0 / q), size=resamples).astype(np.float64)
    weight = counts[:, valid]
    with np.errstate(invalid="ignore", divide="ignore"):
        total = weight.sum(axis=1)
        boot_nd_a = weight @ nd_a[valid] / total
        boot_nd_b = weight @ nd_b[valid] / total
    boot_qwk_a = np.asarray(qwk_from_confusion((counts @ conf_a).reshape(-1, scale, scale)))
    boot_qwk_b = np.asarray(qwk_from_confusion((counts @ conf_b).reshape(-1, scale, scale)))

    point_nd_a = float(nd_a[valid].mean()) if valid.any() else float("nan")
    point_nd_b = float(nd_b[valid].mean()) if valid.any() else float("nan")
    # One matrix gives a float, a stack of them an array.
    point_qwk_a = float(qwk_from_confusion(conf_a.sum(axis=0).reshape(scale, scale)))
    point_qwk_b = float(qwk_from_confusion(conf_b.sum(axis=0).reshape(scale, scale)))

    def summary(a: float, b: float, samples: np.ndarray) -> dict[str, Any]:
        finite = samples[np.isfinite(samples)]
        return {
            "a": round(a, 4),
            "b": round(b, 4),
            "gap": round(b - a, 4),
            "ci95": _interval(samples, alpha),
            "share_le_0": round(float((finite <= 0).mean()), 4) if len(finite) else None,
        }

    return {
        "rows": len(truth),
        "queries": q,
        "queries_with_ndcg": int(valid.sum()),
        "resamples": resamples,
        "seed": seed,
        "unit": "query",
        "ndcg10": summary(point_nd_a, point_nd_b, boot_nd_b - boot_nd_a),
        "qwk": summary(point_qwk_a, point_qwk_b, boot_qwk_b - boot_qwk_a),
    }


def model_metrics(
    truth: np.ndarray,
    label: np.ndarray | None,
    score: np.ndarray,
    queries: Sequence[str],
    teacher_label: np.ndarray | None = None,
) -> dict[str, Any]:
    """`label_metrics` against the truth (only nDCG@10 and AUROC for a model with no labels,
    the cosine), and the QWK of `label` against the teacher's labels."""
    from serving.teacher.metrics import auroc_by_threshold, label_metrics, ndcg_at, qwk

    if label is None:
        out: dict[str, Any] = {
            "accuracy": None,
            "qwk": None,
            "ndcg10": ndcg_at(truth, score, queries, 10),
            "auroc": auroc_by_threshold(truth, score, SCALE),
        }
    else:
        out = label_metrics(truth, label, score, queries, SCALE)
    out["qwk_vs_teacher"] = (
        qwk(teacher_label, label, SCALE)
        if label is not None and teacher_label is not None
        else None
    )
    out["rows"] = len(truth)
    out["queries"] = len(set(queries))
    return _rounded(out)


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 4)
    return value


# --------------------------------------------------------------------------- teacher


def train_world_teacher(
    settings: Settings, out: Path, teacher_seed: int, rows: int, epochs: int, max_steps: int | None
) -> Path:
    """A teacher trained on the labeled sample of another seed's world (as `make demo`'s
    quick teacher): it never saw the evaluated world's pins, users or noise."""
    from serving.teacher.data import load_pairs
    from serving.teacher.train import TrainConfig, train_teacher
    from streams.generator.sample import write_labeled_sample

    sample_settings = settings.model_copy(deep=True)
    sample_settings.generator.seed = teacher_seed
    sample = out.parent / f"{out.name}-sample.parquet"
    written = write_labeled_sample(sample_settings, sample, rows=rows)
    log(f"teacher: training on {written} labeled impressions of world seed {teacher_seed}")
    config = TrainConfig.from_settings(
        settings.teacher, epochs=epochs, max_length=96, max_steps=max_steps
    )
    train_teacher(
        load_pairs(sample, "world"),
        out,
        config,
        version=f"world-s{teacher_seed}-n{rows}-e{epochs}",
        progress=log,
    )
    return out


@dataclass
class Labeled:
    """The teacher's view of every row: per distinct (query, pin text) pair, its
    probabilities, label, score and the student inputs; `pair` maps rows to pairs."""

    pair: np.ndarray  # (rows,) index into the pairs
    probs: np.ndarray  # (pairs, scale)
    label: np.ndarray  # (pairs,)
    score: np.ndarray  # (pairs,)
    inputs: StudentInputs  # (pairs)
    teacher_version: str
    feature_versions: dict[str, str]
    seconds: float

    def rows(self, rows: np.ndarray) -> tuple[StudentInputs, np.ndarray, np.ndarray, np.ndarray]:
        """Inputs, probabilities, labels and scores of these rows."""
        pairs = self.pair[rows]
        return self.inputs.take(pairs), self.probs[pairs], self.label[pairs], self.score[pairs]


def label_rows(
    teacher_dir: Path, frame: pd.DataFrame, chunk: int = 256, progress: bool = False
) -> Labeled:
    """Label each distinct (query, pin text) of `frame` once with the teacher in process
    (ONNX int8, as served), keeping the embeddings its bi cosine was computed from, and
    build the student inputs from them as the labeler does (`pair_features`)."""
    from tqdm import tqdm

    from serving.student.features import Featurizer, pair_features
    from serving.teacher.model import Teacher

    teacher = Teacher.load(teacher_dir, runtime="onnx", quantize="int8")
    if teacher.bi_encoder is None:
        raise SystemExit(
            f"teacher {teacher.version} has no bi-encoder: students read its embeddings"
        )
    # The featurizer of this teacher, sharing its loaded bi-encoder and BM25 statistics:
    # the features equal `Featurizer.from_teacher(teacher_dir)`'s (same ONNX int8 graph).
    featurizer = Featurizer(
        Path(teacher_dir), teacher.bi_encoder, teacher.bm25, teacher.manifest, "onnx-int8"
    )
    keys = frame["query"] + "\x00" + frame["pin_text"]
    pair, uniques = pd.factorize(keys, sort=False)
    queries = [k.split("\x00", 1)[0] for k in uniques]
    texts = [k.split("\x00", 1)[1] for k in uniques]
    n = len(queries)
    probs = np.zeros((n, teacher.scale), np.float32)
    label = np.zeros(n, np.int32)
    score = np.zeros(n, np.float32)
    parts: list[StudentInputs] = []
    started = time.perf_counter()
    bar = tqdm(total=n, desc="teacher", unit="pair", disable=not progress, mininterval=2.0)
    for start in range(0, n, chunk):
        q, t = queries[start : start + chunk], texts[start : start + chunk]
        pred, q_emb, p_emb = teacher.predict_with_embeddings(q, t)
        probs[start : start + len(q)] = pred.probs
        label[start : start + len(q)] = pred.label
        score[start : start + len(q)] = pred.score
        parts.append(pair_features(featurizer.bm25, q, t, q_emb, p_emb))
        bar.update(len(q))
    bar.close()
    return Labeled(
        pair=np.asarray(pair, np.int64),
        probs=probs,
        label=label,
        score=score,
        inputs=StudentInputs.concat(parts),
        teacher_version=f"{teacher.version}+onnx-int8",
        feature_versions=featurizer.versions(),
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- students


def train_on(
    name: str,
    inputs: StudentInputs,
    probs: np.ndarray | None,
    labels: np.ndarray | None,
    epochs: int,
    seed: int,
    progress: bool,
) -> tuple[Any, dict[str, Any]]:
    from serving.student.model import StudentConfig, train_student

    config = StudentConfig(
        epochs=epochs, seed=seed, targets="hard" if labels is not None else "soft"
    )
    started = time.perf_counter()
    log(f"student {name}: {len(inputs):,} rows, {config.targets} targets")
    student = train_student(
        inputs, SCALE, probs=probs, labels=labels, config=config, version=name, progress=progress
    )
    seconds = time.perf_counter() - started
    training = student.manifest.training
    info = {
        "rows": len(inputs),
        "targets": config.targets,
        "best_epoch": training["best_epoch"],
        "epochs_run": len(cast(list[object], training["history"])),
        "best_val_loss": round(float(cast(float, training["best_val_loss"])), 4),
        "train_seconds": round(seconds, 1),
    }
    return student, info


# --------------------------------------------------------------------------- experiments


def scaling_splits(
    n_rows: int, eval_rows: int, human: int, multiples: Sequence[int], seed: int
) -> dict[str, np.ndarray]:
    """Disjoint random impressions: `eval`, `human` (N), and nested teacher-labeled sets of
    m x N other impressions for each multiple m (clipped to what the world has)."""
    if eval_rows + human > n_rows:
        raise SystemExit(
            f"the world has {n_rows:,} impressions: too few for {eval_rows:,} held out and "
            f"{human:,} human-labeled; raise --impressions or lower --eval/--human"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_rows)
    out = {
        "eval": np.sort(order[:eval_rows]),
        "human": np.sort(order[eval_rows : eval_rows + human]),
    }
    pool = order[eval_rows + human :]
    for m in multiples:
        out[f"{m}x"] = np.sort(pool[: m * human])
    return out


def freshness_splits(
    day: np.ndarray, d: float, dk: float, cap: int, seed: int
) -> dict[str, np.ndarray]:
    """Training rows of A (a uniform sample of `cap` rows before day `d`), B (a uniform
    sample of as many rows before `d + k`), B-recent (the last as many rows before `d + k`)
    and the evaluation rows (every row from `dk` on). A and B have the same size: the
    smaller of `cap` and the rows before `d`."""
    rng = np.random.default_rng(seed)
    before_d = np.flatnonzero(day < d)
    before_dk = np.flatnonzero(day < dk)
    size = min(cap, len(before_d))
    by_time = before_dk[np.argsort(day[before_dk], kind="stable")]
    return {
        "A": np.sort(rng.choice(before_d, size=size, replace=False)),
        "B": np.sort(rng.choice(before_dk, size=size, replace=False)),
        "B_recent": np.sort(by_time[len(by_time) - size :]),
        "eval": np.flatnonzero(day >= dk),
    }


# The freshness students: name -> (training rows, labels). The *_truth pair learns the true
# grades of the same rows: what fresher labels could buy if they were perfect.
FRESH_STUDENTS = {
    "A": ("A", "teacher"),
    "B": ("B", "teacher"),
    "B_recent": ("B_recent", "teacher"),
    "A_truth": ("A", "truth"),
    "B_truth": ("B", "truth"),
}
FRESH_GAPS = (("B", "A"), ("B_recent", "A"), ("B_truth", "A_truth"))

_TOKEN = re.compile(r"\w+", re.UNICODE)


def _tokens(texts: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for text in texts:
        out.update(_TOKEN.findall(text.lower()))
    return out


def label_scaling(
    frame: pd.DataFrame,
    labeled: Labeled,
    args: argparse.Namespace,
    progress: bool,
) -> dict[str, Any]:
    splits = scaling_splits(len(frame), args.eval, args.human, args.multiples, args.split_seed)
    ev = splits["eval"]
    truth = frame["grade"].to_numpy()[ev]
    queries = frame["query"].to_numpy()[ev].tolist()
    ev_inputs, _, t_label, t_score = labeled.rows(ev)
    eval_pairs = set(labeled.pair[ev].tolist())

    rows: list[dict[str, Any]] = []
    predictions: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(name: str, labels: int, source: str, student: Any, info: dict[str, Any]) -> None:
        prediction = student.predict(ev_inputs)
        predictions[name] = (prediction.label, prediction.score)
        rows.append(
            {
                "name": name,
                "labels": labels,
                "source": source,
                **model_metrics(truth, prediction.label, prediction.score, queries, t_label),
                "training": info,
            }
        )

    human = splits["human"]
    h_inputs, h_probs, _, _ = labeled.rows(human)
    h_truth = frame["grade"].to_numpy()[human]
    student, info = train_on(
        "1x-human", h_inputs, None, h_truth, args.epochs, args.student_seed, progress
    )
    info["eval_pairs_seen"] = _seen_share(labeled, human, eval_pairs, ev)
    add("1x human (hard)", len(human), "true grades", student, info)
    student, info = train_on(
        "1x-teacher", h_inputs, h_probs, None, args.epochs, args.student_seed, progress
    )
    info["eval_pairs_seen"] = _seen_share(labeled, human, eval_pairs, ev)
    add("1x teacher (soft)", len(human), "teacher probabilities", student, info)
    for m in args.multiples:
        train = splits[f"{m}x"]
        if len(train) < m * args.human:
            log(f"only {len(train):,} impressions left for {m}x ({m * args.human:,} asked)")
        inputs, probs, _, _ = labeled.rows(train)
        student, info = train_on(
            f"{m}x-teacher", inputs, probs, None, args.epochs, args.student_seed, progress
        )
        info["eval_pairs_seen"] = _seen_share(labeled, train, eval_pairs, ev)
        add(f"{m}x teacher (soft)", len(train), "teacher probabilities", student, info)

    teacher_row = {
        "name": "teacher",
        "labels": None,
        "source": f"{labeled.teacher_version} (ceiling)",
        **model_metrics(truth, t_label, t_score, queries, t_label),
    }
    cosine_row = {
        "name": "bi-encoder cosine",
        "labels": 0,
        "source": "zero-shot (floor)",
        **model_metrics(truth, None, ev_inputs.pair[:, 0], queries),
    }
    largest = f"{max(args.multiples)}x teacher (soft)"
    gaps = {
        f"{largest} - 1x human (hard)": bootstrap_gap(
            truth,
            queries,
            *predictions["1x human (hard)"],
            *predictions[largest],
            resamples=args.resamples,
            seed=args.bootstrap_seed,
        ),
        f"{largest} - 1x teacher (soft)": bootstrap_gap(
            truth,
            queries,
            *predictions["1x teacher (soft)"],
            *predictions[largest],
            resamples=args.resamples,
            seed=args.bootstrap_seed,
        ),
    }
    return {
        "eval_rows": len(ev),
        "eval_queries": len(set(queries)),
        "human_rows": int(len(human)),
        "multiples": list(args.multiples),
        "rows": [*rows, teacher_row, cosine_row],
        "gaps": gaps,
    }


def _seen_share(labeled: Labeled, train: np.ndarray, eval_pairs: set[int], ev: np.ndarray) -> float:
    """Share of evaluation rows whose (query, pin text) pair is also in the training rows."""
    seen = set(labeled.pair[train].tolist()) & eval_pairs
    return round(float(np.isin(labeled.pair[ev], list(seen)).mean()), 4) if seen else 0.0


def freshness(
    frame: pd.DataFrame,
    labeled: Labeled,
    args: argparse.Namespace,
    progress: bool,
) -> dict[str, Any]:
    day = frame["day"].to_numpy()
    d, dk = args.fresh_day, args.fresh_day + args.fresh_k
    splits = freshness_splits(day, d, dk, args.fresh_rows, args.split_seed)
    ev = splits["eval"]
    if not len(ev):
        raise SystemExit(f"no impressions from day {dk:.1f} on: lower --fresh-day or --fresh-k")
    truth = frame["grade"].to_numpy()[ev]
    queries = frame["query"].to_numpy()[ev]
    emerges = frame["emerges_day"].to_numpy()
    emerged = np.nan_to_num(emerges[ev], nan=-1.0) > d
    ev_inputs, _, t_label, t_score = labeled.rows(ev)
    cosine = ev_inputs.pair[:, 0]

    grades = frame["grade"].to_numpy()
    students: dict[str, dict[str, Any]] = {}
    preds: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (rows_of, targets) in FRESH_STUDENTS.items():
        train = splits[rows_of]
        inputs, probs, t_train_label, _ = labeled.rows(train)
        if targets == "teacher":
            student, info = train_on(
                f"fresh-{name}", inputs, probs, None, args.epochs, args.student_seed, progress
            )
        else:
            student, info = train_on(
                f"fresh-{name}",
                inputs,
                None,
                grades[train],
                args.epochs,
                args.student_seed,
                progress,
            )
        train_days = day[train]
        new_rows = np.nan_to_num(emerges[train], nan=-1.0) > d
        info.update(
            {
                "rows_of": rows_of,
                "labels": "teacher probabilities" if targets == "teacher" else "true grades",
                "first_day": round(float(train_days.min()), 2),
                "last_day": round(float(train_days.max()), 2),
                "rows_of_topics_emerged_after_d": int(new_rows.sum()),
                "rows_by_trend_topic": _trend_counts(frame, train),
                # How good are the labels it got for the new topics?
                "teacher_vs_truth_on_those_rows": (
                    model_metrics(
                        grades[train][new_rows],
                        t_train_label[new_rows],
                        labeled.score[labeled.pair[train]][new_rows],
                        frame["query"].to_numpy()[train][new_rows].tolist(),
                    )
                    if new_rows.sum() >= 20
                    else None
                ),
            }
        )
        prediction = student.predict(ev_inputs)
        preds[name] = (prediction.label, prediction.score)
        students[name] = {"training": info}

    def subset_metrics(mask: np.ndarray) -> dict[str, Any]:
        q = queries[mask].tolist()
        out = {
            name: model_metrics(truth[mask], p[0][mask], p[1][mask], q, t_label[mask])
            for name, p in preds.items()
        }
        out["teacher"] = model_metrics(truth[mask], t_label[mask], t_score[mask], q, t_label[mask])
        out["bi-encoder cosine"] = model_metrics(truth[mask], None, cosine[mask], q)
        return out

    everything = np.ones(len(ev), bool)
    subsets = {"all": everything, "emerged_after_d": emerged, "rest": ~emerged}
    metrics = {name: subset_metrics(mask) for name, mask in subsets.items() if mask.any()}
    grade_shares = {
        name: {str(g): round(float((truth[mask] == g).mean()), 4) for g in range(1, SCALE + 1)}
        for name, mask in subsets.items()
        if mask.any()
    }
    gaps: dict[str, Any] = {}
    for b, a in FRESH_GAPS:
        for name, mask in subsets.items():
            if mask.any():
                gaps[f"{b} - {a}, {name}"] = bootstrap_gap(
                    truth[mask],
                    queries[mask].tolist(),
                    preds[a][0][mask],
                    preds[a][1][mask],
                    preds[b][0][mask],
                    preds[b][1][mask],
                    resamples=args.resamples,
                    seed=args.bootstrap_seed,
                )

    # Why a gap is (or is not) there: are the new topics' words new to A at all?
    a_rows = splits["A"]
    seen_tokens = _tokens(frame["query"].to_numpy()[a_rows]) | _tokens(
        frame["pin_text"].to_numpy()[a_rows]
    )
    new_queries = sorted(set(queries[emerged].tolist()))
    new_tokens = _tokens(new_queries)
    unseen = sorted(new_tokens - seen_tokens)
    unseen_q = [q for q in new_queries if _tokens([q]) - seen_tokens]

    by_day = []
    for start in range(int(math.floor(dk)), int(math.ceil(day.max())) + 1):
        mask = (day[ev] >= max(start, dk)) & (day[ev] < start + 1)
        if mask.sum() < 20:
            continue
        entry: dict[str, Any] = {"day": start, "rows": int(mask.sum())}
        for subset, extra in (("all", everything), ("emerged_after_d", emerged)):
            m = mask & extra
            if m.sum() < 20:
                continue
            q = queries[m].tolist()
            entry[subset] = {
                "rows": int(m.sum()),
                **{
                    name: _day_metrics(truth[m], p[0][m], p[1][m], q)
                    for name, p in {**preds, "teacher": (t_label, t_score)}.items()
                },
            }
        by_day.append(entry)

    return {
        "d": round(d, 2),
        "d_plus_k": round(dk, 2),
        "k": round(args.fresh_k, 2),
        "cap": args.fresh_rows,
        "eval_rows": len(ev),
        "eval_rows_emerged_after_d": int(emerged.sum()),
        "eval_queries_emerged_after_d": len(new_queries),
        "grade_shares": grade_shares,
        "topics": _topic_days(frame),
        "students": students,
        "metrics": metrics,
        "gaps": gaps,
        "novelty": {
            "emerged_query_tokens": len(new_tokens),
            "unseen_by_a": unseen,
            "emerged_queries_with_a_token_unseen_by_a": len(unseen_q),
            "examples": unseen_q[:8],
        },
        "by_day": by_day,
    }


def _day_metrics(truth: np.ndarray, label: np.ndarray, score: np.ndarray, q: list[str]) -> dict:
    from serving.teacher.metrics import ndcg_at, qwk

    return _rounded({"ndcg10": ndcg_at(truth, score, q, 10), "qwk": qwk(truth, label, SCALE)})


def _trend_counts(frame: pd.DataFrame, rows: np.ndarray) -> dict[str, int]:
    sub = frame.iloc[rows]
    sub = sub[sub["emerges_day"].notna()]
    return {str(k): int(v) for k, v in sub["topic"].value_counts().sort_index().items()}


def _topic_days(frame: pd.DataFrame) -> dict[str, Any]:
    trends = frame[frame["emerges_day"].notna()]
    out = {}
    for topic, group in trends.groupby("topic"):
        out[str(topic)] = {
            "emerges_day": round(float(group["emerges_day"].iloc[0]), 2),
            "first_impression_day": round(float(group["day"].min()), 2),
            "impressions": len(group),
        }
    return out


# --------------------------------------------------------------------------- report


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _metric_cells(row: dict[str, Any]) -> list[str]:
    auroc = row.get("auroc") or {}
    return [
        _fmt(row.get("accuracy")),
        _fmt(row.get("qwk")),
        _fmt(row.get("ndcg10")),
        _fmt(auroc.get(">=2")),
        _fmt(auroc.get(">=3")),
        _fmt(auroc.get(">=4")),
        _fmt(row.get("qwk_vs_teacher")),
    ]


HEADER = "accuracy | QWK | nDCG@10 | AUROC>=2 | AUROC>=3 | AUROC>=4 | QWK vs teacher"


def _gap_table(gaps: dict[str, dict[str, Any]]) -> list[str]:
    """The Markdown table of the students' gaps to the teacher, after a blank line."""
    return [
        "",
        "| gap (query bootstrap, 95% CI) | rows / queries | nDCG@10 | QWK |",
        "| --- | --- | --- | --- |",
        *(_gap_line(name, gap) for name, gap in gaps.items()),
    ]


def _gap_line(name: str, gap: dict[str, Any]) -> str:
    nd, qk = gap["ndcg10"], gap["qwk"]
    return (
        f"| {name} | {gap['rows']:,} / {gap['queries']:,} | "
        f"{nd['gap']:+.4f} [{nd['ci95'][0]:+.4f}, {nd['ci95'][1]:+.4f}] | "
        f"{qk['gap']:+.4f} [{qk['ci95'][0]:+.4f}, {qk['ci95'][1]:+.4f}] |"
    )


def render(report: dict[str, Any]) -> str:
    lines = []
    s = report["scaling"]
    lines += [
        f"## Label scaling ({s['eval_rows']:,} held-out impressions, {s['eval_queries']:,} "
        "queries, vs hidden truth)",
        "",
        f"| model | labels | {HEADER} |",
        "| --- | --- |" + " --- |" * 7,
    ]
    for row in s["rows"]:
        lines.append(
            f"| {row['name']} | {_fmt(row['labels'])} | " + " | ".join(_metric_cells(row)) + " |"
        )
    lines += _gap_table(s["gaps"])
    f = report["freshness"]
    lines += [
        "",
        f"## Freshness (D = day {f['d']}, D+k = day {f['d_plus_k']}; {f['eval_rows']:,} "
        f"impressions from D+k on, {f['eval_rows_emerged_after_d']:,} of topics that emerged "
        "after D)",
        "",
    ]
    for name, info in f["students"].items():
        t = info["training"]
        lines.append(
            f"- {name}: {t['rows']:,} rows, days {t['first_day']}-{t['last_day']}, "
            f"{t['labels']}, {t['rows_of_topics_emerged_after_d']:,} rows of topics emerged "
            f"after D {t['rows_by_trend_topic']}"
        )
    for subset, models in f["metrics"].items():
        lines += ["", f"### {subset}", "", f"| model | {HEADER} |", "| --- |" + " --- |" * 7]
        for name, row in models.items():
            lines.append(f"| {name} | " + " | ".join(_metric_cells(row)) + " |")
    lines += _gap_table(f["gaps"])
    nov = f["novelty"]
    lines += [
        "",
        f"Emerged queries' words A never saw: {nov['unseen_by_a']} "
        f"({nov['emerged_queries_with_a_token_unseen_by_a']} of "
        f"{f['eval_queries_emerged_after_d']} queries)",
        "",
        f"Runtime: {report['seconds']['total']:.0f} s ({report['seconds']})",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    s = report["scaling"]
    rows = {r["name"]: r for r in s["rows"]}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, title in ((axes[0], "ndcg10", "nDCG@10"), (axes[1], "qwk", "QWK")):
        xs = [r["labels"] for r in s["rows"] if r["source"] == "teacher probabilities"]
        ys = [r[metric] for r in s["rows"] if r["source"] == "teacher probabilities"]
        ax.plot(xs, ys, "o-", label="student, teacher labels (soft)")
        human = rows["1x human (hard)"]
        ax.plot(
            [human["labels"]],
            [human[metric]],
            "s",
            color="C2",
            ms=8,
            label="student, human labels (1x)",
        )
        teacher = rows["teacher"][metric]
        ax.axhline(teacher, color="C3", ls="--", label="teacher")
        cosine = rows["bi-encoder cosine"][metric]
        if cosine is not None:
            ax.axhline(cosine, color="C7", ls=":", label="bi-encoder cosine (zero-shot)")
        ax.set_xscale("log")
        ax.set_xlabel("training labels (impressions)")
        ax.set_title(f"{title} vs hidden truth")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Label scaling ({s['eval_rows']:,} held-out impressions)")
    fig.tight_layout()
    path = out_dir / "students_scaling.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))

    f = report["freshness"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    styles = {
        "A": ("C0", "o-", 1.5),
        "B": ("C1", "s-", 1.5),
        "B_recent": ("C2", "^-", 1.5),
        "teacher": ("C3", "--", 1.5),
        "A_truth": ("C0", ":", 1.0),
        "B_truth": ("C1", ":", 1.0),
    }
    for r, subset in enumerate(("all", "emerged_after_d")):
        for c, (metric, title) in enumerate((("ndcg10", "nDCG@10"), ("qwk", "QWK"))):
            ax = axes[r][c]
            for name, (color, style, width) in styles.items():
                pts = [
                    (e["day"], e[subset][name][metric])
                    for e in f["by_day"]
                    if subset in e and e[subset][name][metric] is not None
                ]
                if pts:
                    ax.plot(*zip(*pts, strict=True), style, color=color, lw=width, ms=4, label=name)
            ax.set_title(
                f"{title}, {'all queries' if subset == 'all' else 'topics emerged after D'}"
            )
            ax.grid(alpha=0.3)
            if r == 1:
                ax.set_xlabel("simulated day")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f"Freshness: A frozen at day {f['d']}, B through day {f['d_plus_k']} "
        f"({f['students']['A']['training']['rows']:,} rows each), per evaluation day"
    )
    fig.tight_layout()
    path = out_dir / "students_freshness.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))
    return written


# --------------------------------------------------------------------------- main


QUICK = {
    "impressions": 6000,
    "human": 100,
    "eval": 800,
    "multiples": [5, 20, 50],
    "teacher_rows": 300,
    "teacher_epochs": 1,
    "teacher_max_steps": 20,
    "fresh_rows": 1000,
    "epochs": 5,
    "resamples": 200,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a small smoke run (about 1 min)")
    p.add_argument("--json", action="store_true", help="print every number as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars on stderr")
    p.add_argument("--seed", type=int, default=7, help="the evaluated world's seed")
    p.add_argument("--impressions", type=int, default=70_000)
    p.add_argument("--sim-days", type=int, default=56)
    p.add_argument("--share", type=float, default=1.0, help="seeded share of impressions kept")
    p.add_argument("--human", type=int, default=1000, help="N: the human-labeled sample")
    p.add_argument("--eval", type=int, default=5000, help="held-out impressions (scaling)")
    p.add_argument(
        "--multiples", type=lambda v: [int(x) for x in v.split(",")], default=[5, 20, 50]
    )
    p.add_argument("--teacher", type=Path, help="a trained teacher directory to use")
    p.add_argument("--teacher-seed", type=int, help="world seed of its sample (seed + 1000)")
    p.add_argument("--teacher-rows", type=int, default=5000)
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--teacher-max-steps", type=int)
    p.add_argument("--fresh-teacher", action="store_true", help="retrain a kept teacher")
    p.add_argument("--fresh-day", type=float, help="D (default: 45%% of --sim-days)")
    p.add_argument("--fresh-k", type=float, help="k in days (default: 25%% of --sim-days)")
    p.add_argument("--fresh-rows", type=int, default=20_000, help="training rows of A and B")
    p.add_argument("--epochs", type=int, default=30, help="student epochs at most")
    p.add_argument("--student-seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=1000)
    p.add_argument("--bootstrap-seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=PROJECT_ROOT / ".freshlabel" / "bench-students")
    p.add_argument("--plot-dir", type=Path, help="default: docs/ (the work folder with --quick)")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            if p.get_default(key) == getattr(args, key):
                setattr(args, key, value)
    args.teacher_seed = args.seed + 1000 if args.teacher_seed is None else args.teacher_seed
    if args.fresh_day is None:
        args.fresh_day = 0.45 * args.sim_days
    if args.fresh_k is None:
        args.fresh_k = 0.25 * args.sim_days
    if args.plot_dir is None:
        args.plot_dir = args.work if args.quick else PROJECT_ROOT / "docs"
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from benchmarks.cpu import machine_load

    args = parse_args(argv)
    progress = not args.quiet
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    load_start = machine_load()
    args.work.mkdir(parents=True, exist_ok=True)

    settings = Settings()
    settings.generator.seed = args.seed
    settings.generator.impressions = args.impressions
    settings.generator.sim_days = args.sim_days

    teacher_dir = args.teacher
    if teacher_dir is None:
        t0 = time.perf_counter()
        teacher_dir = args.work / (
            f"teacher-s{args.teacher_seed}-n{args.teacher_rows}-e{args.teacher_epochs}"
            + (f"-m{args.teacher_max_steps}" if args.teacher_max_steps else "")
        )
        if (teacher_dir / "manifest.json").is_file() and not args.fresh_teacher:
            log(f"teacher: reusing {teacher_dir} (--fresh-teacher retrains)")
        else:
            train_world_teacher(
                settings,
                teacher_dir,
                args.teacher_seed,
                args.teacher_rows,
                args.teacher_epochs,
                args.teacher_max_steps,
            )
        seconds["teacher_train"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    log(f"world: seed {args.seed}, {args.impressions:,} impressions over {args.sim_days} days")
    frame = collect_world_rows(settings, args.share, progress)
    seconds["world"] = round(time.perf_counter() - t0, 1)

    t0 = time.perf_counter()
    labeled = label_rows(teacher_dir, frame, progress=progress)
    seconds["teacher_label"] = round(time.perf_counter() - t0, 1)
    pairs = len(labeled.label)
    log(
        f"teacher {labeled.teacher_version}: {len(frame):,} impressions, {pairs:,} distinct "
        f"pairs ({labeled.seconds:.0f} s, {pairs / max(labeled.seconds, 1e-9):.0f} pairs/s)"
    )
    truth = frame["grade"].to_numpy()
    teacher_vs_truth = model_metrics(
        truth,
        labeled.label[labeled.pair],
        labeled.score[labeled.pair],
        frame["query"].tolist(),
        labeled.label[labeled.pair],
    )

    t0 = time.perf_counter()
    scaling = label_scaling(frame, labeled, args, progress)
    seconds["scaling"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    fresh = freshness(frame, labeled, args, progress)
    seconds["freshness"] = round(time.perf_counter() - t0, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)

    grades = np.bincount(truth, minlength=SCALE + 1)[1:]
    report: dict[str, Any] = {
        "command": "python -m benchmarks.bench_students "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "world": {
            "seed": args.seed,
            "impressions": len(frame),
            "sim_days": args.sim_days,
            "distinct_pairs": pairs,
            "cache_hit_rate": round(1 - pairs / len(frame), 4),
            "grade_shares": {
                str(g + 1): round(float(c / len(frame)), 4) for g, c in enumerate(grades)
            },
            "queries": int(frame["query"].nunique()),
        },
        "teacher": {
            "dir": str(teacher_dir),
            "version": labeled.teacher_version,
            "pairs_per_s": round(pairs / max(labeled.seconds, 1e-9), 1),
            "vs_truth_all_impressions": teacher_vs_truth,
        },
        "feature_versions": labeled.feature_versions,
        "scaling": scaling,
        "freshness": fresh,
        "seconds": seconds,
        "load": {"start": load_start, "end": machine_load()},
    }
    report["plots"] = plot(report, args.plot_dir)
    (args.work / "bench_students.json").write_text(json.dumps(report, indent=2) + "\n")
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(render(report))
    return report


if __name__ == "__main__":
    main()
