"""What the drift signal costs the live labeler: CPU per pair the teacher scores (the
student's inputs from the served embeddings and the texts, `Student.predict`, the LRU of
its labels) and per labeled row (the comparison, the windows, the gauges, the alert check).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_drift.py [--pairs 4096 --chunk 256]
        [--data ../shared/data/crowdflower/train.parquet] [--bm25 TEACHER/bm25.json]

Realistic shapes: 384-wide embeddings, the default student (hidden 256, 128), the pin texts
and queries of a labeled parquet (the teacher's input format), the BM25 statistics of a
trained teacher, chunks of `labeler.score_chunk_rows` pairs; CPU is this process's (user +
system, every thread: numpy's BLAS may use more than one), also shown as wall time.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from infra.config import PROJECT_ROOT, Settings
from schemas import EnrichedImpression, RelevanceLabel
from serving.labeler.cache import cache_key, input_hash
from serving.labeler.drift import DriftMonitor
from serving.labeler.labeler import ScoredPair
from serving.labeler.metrics import LabelerMetrics
from serving.student.features import PAIR_FEATURES
from serving.student.model import Student, StudentManifest
from serving.teacher.data import load_pairs
from serving.teacher.lexical import Bm25Stats

DIM = 384
HIDDEN = [256, 128]


class Quiet:
    def publish(self, alerts: list) -> None:  # type: ignore[type-arg]
        pass

    def close(self) -> None:
        pass


def student(rng: np.random.Generator) -> Student:
    widths = [4 * DIM + len(PAIR_FEATURES), *HIDDEN, 4]
    weights = [
        (rng.normal(scale=0.05, size=(a, b)), np.zeros(b))
        for a, b in zip(widths[:-1], widths[1:], strict=True)
    ]
    manifest = StudentManifest(
        version="bench",
        scale=4,
        hidden=HIDDEN,
        pair_features=list(PAIR_FEATURES),
        embedding_dim=DIM,
        created_at=datetime.now(UTC).isoformat(),
        teacher_version="t+onnx-int8",
        feature_versions={"teacher_version": "t", "bi_encoder_numerics": "onnx-int8"},
    )
    return Student(manifest, weights, np.zeros(len(PAIR_FEATURES)), np.ones(len(PAIR_FEATURES)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=4096)
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument(
        "--data", type=Path, default=PROJECT_ROOT.parent / "shared/data/crowdflower/train.parquet"
    )
    parser.add_argument(
        "--bm25", type=Path, default=PROJECT_ROOT / ".freshlabel/teachers/crowdflower/bm25.json"
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    pairs = load_pairs(args.data, "crowdflower")
    take = rng.choice(len(pairs.queries), size=args.pairs, replace=True)
    queries = [pairs.queries[i] for i in take]
    texts = [pairs.pin_texts[i] for i in take]
    settings = Settings(state_dir=Path("/tmp/bench-drift"))
    metrics = LabelerMetrics(settings, serve=False)
    monitor = DriftMonitor(
        settings, student(rng), Bm25Stats.load(args.bm25), None, metrics, Quiet()
    )
    monitor.wants_embeddings("t+onnx-int8")
    q = rng.normal(size=(args.pairs, DIM)).astype(np.float32)
    p = rng.normal(size=(args.pairs, DIM)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    scored = [
        ScoredPair(
            probs=[0.25] * 4,
            score=0.5,
            teacher_version="t+onnx-int8",
            label_scale=4,
            query_embedding=q[i],
            pin_embedding=p[i],
        )
        for i in range(args.pairs)
    ]
    hashes = [input_hash(a, b) for a, b in zip(queries, texts, strict=True)]
    keys = [
        cache_key(a, f"pin-{i}", h, "t+onnx-int8")
        for i, (a, h) in enumerate(zip(queries, hashes, strict=True))
    ]
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    rows = [
        EnrichedImpression(
            impression_id=f"i{i}",
            request_id=f"r{i}",
            user_id="u",
            query=queries[i],
            pin_id=f"pin-{i}",
            position=1,
            country="DE",
            locale=("de-DE", "en-US", "fr-FR", "ja-JP")[i % 4],
            event_time=t0 + timedelta(seconds=i),
            title="t",
        )
        for i in range(args.pairs)
    ]
    labels = [
        RelevanceLabel(
            impression_id=f"i{i}",
            query=queries[i],
            pin_id=f"pin-{i}",
            teacher_version="t+onnx-int8",
            label_scale=4,
            probs=[0.1, 0.2, 0.3, 0.4],
            score=0.67,
            labeled_at=t0,
            input_hash=hashes[i],
            impression_time=t0,
        )
        for i in range(args.pairs)
    ]
    # Warm-up, then measured passes.
    monitor.predict(
        keys[: args.chunk], queries[: args.chunk], texts[: args.chunk], scored[: args.chunk]
    )
    result: dict[str, float] = {}
    cpu, wall = time.process_time(), time.perf_counter()
    for s in range(0, args.pairs, args.chunk):
        e = s + args.chunk
        monitor.predict(keys[s:e], queries[s:e], texts[s:e], scored[s:e])
    result["predict_cpu_us_per_scored_pair"] = (time.process_time() - cpu) * 1e6 / args.pairs
    result["predict_wall_us_per_scored_pair"] = (time.perf_counter() - wall) * 1e6 / args.pairs
    # The parts: the lexical pair features alone, the student's forward pass alone.
    from serving.student.features import pair_features

    cpu = time.process_time()
    for s in range(0, args.pairs, args.chunk):
        e = s + args.chunk
        inputs = pair_features(monitor.bm25, queries[s:e], texts[s:e], q[s:e], p[s:e])  # type: ignore[arg-type]
    result["pair_features_cpu_us_per_pair"] = (time.process_time() - cpu) * 1e6 / args.pairs
    cpu = time.process_time()
    for _ in range(0, args.pairs, args.chunk):
        with monitor._blas.limit(limits=1):  # as `predict` runs it
            monitor.student.predict(inputs)  # type: ignore[union-attr]
    result["student_predict_cpu_us_per_pair"] = (time.process_time() - cpu) * 1e6 / args.pairs
    cpu, wall = time.process_time(), time.perf_counter()
    batch = 2000
    for s in range(0, args.pairs, batch):
        monitor.observe(rows[s : s + batch], labels[s : s + batch], "bench", "0:0-1")
    result["observe_cpu_us_per_row"] = (time.process_time() - cpu) * 1e6 / args.pairs
    result["observe_wall_us_per_row"] = (time.perf_counter() - wall) * 1e6 / args.pairs
    result["compared"] = monitor.compared
    print(json.dumps({k: round(v, 1) for k, v in result.items()}, indent=2))


if __name__ == "__main__":
    main()
