"""Does each inference runtime keep the teacher's quality? One cross-validation, every runtime.

    .venv/bin/python -m benchmarks.bench_teacher_int8 \\
        --data ../shared/data/crowdflower/train.parquet --cv 3 --epochs 1

Runs the query-grouped K-fold cross-validation of `freshlabel teacher eval --cv K` (same
folds, recipe and frozen-layer cache) once, and scores every fold's held-out rows with the
same fold teacher in each runtime: eager torch fp32 (the reference `teacher eval` reports),
ONNX fp32, ONNX int8 and torch dynamic int8, each running the whole teacher (both encoders,
stacker) end to end. Prints pooled nDCG@10, QWK and accuracy per runtime, the difference
to the reference, the share of labels that agree with it, the largest probability
difference and the scoring pairs/s. Training K teachers once instead of once per runtime
is what makes this affordable on 2 cores; `teacher eval --cv K --runtime onnx --quantize
int8` gives the same figure for one runtime.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cpu import machine_load
from infra.config import Settings
from serving.teacher.data import LabeledPairs, load_pairs
from serving.teacher.evaluate import cross_validate, evaluate
from serving.teacher.metrics import label_metrics
from serving.teacher.model import Teacher
from serving.teacher.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
RUNTIMES = (("torch", "none"), ("onnx", "none"), ("onnx", "int8"), ("torch", "int8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/crowdflower/train.parquet"
    )
    parser.add_argument("--columns", default="crowdflower")
    parser.add_argument("--cv", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument(
        "--runtimes",
        default=",".join(f"{r}/{q}" for r, q in RUNTIMES),
        help="runtime/quantize pairs scored end to end, comma separated",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    runtimes = [tuple(x.split("/")) for x in args.runtimes.split(",")]

    settings = Settings()
    config = TrainConfig.from_settings(settings.teacher, epochs=args.epochs)
    pairs = load_pairs(args.data, args.columns)
    n = len(pairs.frame)
    # Per runtime: the pooled out-of-fold outputs and the seconds spent scoring them.
    pooled: dict[tuple[str, ...], dict[str, Any]] = {
        rt: {
            "probs": np.zeros((n, pairs.scale), np.float32),
            "label": np.zeros(n, np.int64),
            "score": np.zeros(n, np.float32),
            "seconds": 0.0,
        }
        for rt in runtimes
    }

    def on_fold(fold: int, teacher_dir: Path, test: LabeledPairs, mask: np.ndarray) -> None:
        for runtime, quantize in runtimes:
            teacher = Teacher.load(
                teacher_dir,
                batch_size=config.infer_batch_size,
                runtime=runtime,
                quantize=quantize,
            )
            started = time.perf_counter()
            result = evaluate(teacher, test)
            out = pooled[(runtime, quantize)]
            out["seconds"] += time.perf_counter() - started
            out["probs"][mask] = result.probs
            out["label"][mask] = result.predicted
            out["score"][mask] = result.scores["teacher"]
            print(
                f"fold {fold + 1}: {runtime}/{quantize} scored {len(test.frame)} rows", flush=True
            )

    load_before = machine_load()
    reference = cross_validate(
        pairs,
        args.cv,
        config,
        progress=lambda m: print(m, flush=True),
        cache_dir=settings.teacher_cache_dir,
        on_fold=on_fold,
    )
    load_after = machine_load()
    ref = reference.summary()
    rows = {
        "torch fp32, cached frozen layers (what `teacher eval --cv` reports)": {
            "ndcg10": ref["ndcg10"],
            "qwk": ref["qwk"],
            "accuracy": ref["accuracy"],
        }
    }
    for (runtime, quantize), out in pooled.items():
        m = label_metrics(pairs.labels, out["label"], out["score"], pairs.queries, pairs.scale)
        rows[f"{runtime} {'fp32' if quantize == 'none' else 'int8'}, end to end"] = {
            "ndcg10": m["ndcg10"],
            "qwk": m["qwk"],
            "accuracy": m["accuracy"],
            "same_label": float((out["label"] == reference.predicted).mean()),
            "max_prob_diff": float(np.abs(out["probs"] - reference.probs).max()),
            "pairs_per_s": n / out["seconds"],
        }
    print(
        f"{args.cv}-fold CV, {n} rows, {args.epochs} epoch(s); load average "
        f"{load_before['load_avg_1_5_15']} -> {load_after['load_avg_1_5_15']} "
        f"({load_before['at']} -> {load_after['at']}, {load_after['cpus']} cores)"
    )
    print(
        "| held-out rows scored by | nDCG@10 | QWK | accuracy | same label as reference "
        "| max abs prob diff | pairs/s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        extra = (
            f"{r['same_label']:.1%} | {r['max_prob_diff']:.4f} | {r['pairs_per_s']:.1f}"
            if "same_label" in r
            else "reference | 0 | -"
        )
        print(f"| {name} | {r['ndcg10']:.4f} | {r['qwk']:.4f} | {r['accuracy']:.4f} | {extra} |")
    summary = {"load_before": load_before, "load_after": load_after, "rows": rows}
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
