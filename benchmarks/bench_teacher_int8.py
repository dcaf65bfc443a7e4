"""Does dynamic int8 quantization keep the teacher's quality? fp32 vs int8 on the same rows.

    .venv/bin/python -m benchmarks.bench_teacher_int8 --model .freshlabel/teachers/crowdflower

Scores the teacher's own validation split (query-disjoint from its cross-encoder training
rows) with both encoders in fp32 and in dynamic int8, and prints nDCG@10, QWK, accuracy,
the largest probability difference and in-process pairs/s for each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from serving.teacher.data import load_pairs
from serving.teacher.metrics import label_metrics
from serving.teacher.model import MANIFEST, Teacher, TeacherManifest
from serving.teacher.train import TrainConfig, subset, validation_mask

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".freshlabel/teachers/crowdflower")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/crowdflower/train.parquet"
    )
    parser.add_argument("--columns", default="crowdflower")
    args = parser.parse_args()
    manifest = TeacherManifest.model_validate_json((args.model / MANIFEST).read_text())
    pairs = load_pairs(args.data, args.columns)
    config = TrainConfig(
        **{k: v for k, v in manifest.settings.items() if k in TrainConfig.model_fields}
    )
    val = subset(pairs, validation_mask(pairs, config))
    outputs = {}
    print(f"teacher {manifest.version}: {len(val.frame)} validation rows")
    print("| encoders | nDCG@10 | QWK | accuracy | pairs/s |")
    print("| --- | --- | --- | --- | --- |")
    for quantize in ("none", "int8"):
        teacher = Teacher.load(args.model, quantize=quantize)
        started = time.perf_counter()
        pred = teacher.predict(val.queries, val.pin_texts)
        rate = len(val.frame) / (time.perf_counter() - started)
        m = label_metrics(val.labels, pred.label, pred.score, val.queries, teacher.scale)
        outputs[quantize] = pred
        name = "fp32" if quantize == "none" else "dynamic int8"
        print(f"| {name} | {m['ndcg10']:.4f} | {m['qwk']:.4f} | {m['accuracy']:.4f} | {rate:.1f} |")
    diff = np.abs(outputs["none"].probs - outputs["int8"].probs).max()
    same = (outputs["none"].label == outputs["int8"].label).mean()
    print(f"max |p_fp32 - p_int8| = {diff:.4f}; same label on {same:.1%} of rows")
    print("(the stacker was fitted on these rows: compare the two lines, not the levels)")


if __name__ == "__main__":
    main()
