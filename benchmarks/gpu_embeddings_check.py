"""The served teacher's embeddings on a GPU (the `gpu` model config: KIND_GPU instances,
eager torch) against the in-process teacher: what the labeler's drift monitor reads.

    .venv/bin/python -m benchmarks.gpu_embeddings_check --model DIR [--precision fp32]

Exports DIR with the `gpu` config into a temporary repository, serves it, asks for
`query_embedding` / `pin_embedding` on unseen CrowdFlower pairs and compares them with
`Teacher.embeddings` of the same teacher loaded in-process on the GPU (same numerics: the
gap is Triton's transport, ~0) and on the CPU in fp32 (the gap a student trained on CPU
features sees). Exits 1 when the served vectors are not the in-process GPU ones. Run by
benchmarks/gpu_check.sh; on a CPU host, tests/test_teacher_serving.py covers the CPU paths.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.bench_teacher import DEFAULT_DATA, ROOT, serve
from infra.process import stop
from serving.client import TeacherClient
from serving.teacher.data import load_pairs
from serving.teacher.model import Teacher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".freshlabel/teachers/crowdflower")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--precision", default="fp32", help="fp32 or fp16 (GPU instances)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    args = parser.parse_args()
    pairs = load_pairs(args.data, "crowdflower")
    queries, texts = pairs.queries[-args.pairs :], pairs.pin_texts[-args.pairs :]
    with tempfile.TemporaryDirectory() as tmp:
        settings, record = serve(
            args.model, Path(tmp), "torch", "none", -1, args.device, args.precision
        )
        try:

            async def ask() -> list:  # type: ignore[type-arg]
                async with TeacherClient.from_settings(settings, batch_size=64) as client:
                    await client.check()
                    return await client.score(queries, texts, embeddings=True)

            served = asyncio.run(ask())
        finally:
            stop(record)
    if any(r.query_embedding is None for r in served):
        print("the gpu config served no embeddings")
        return 1
    got_q = np.stack([r.query_embedding for r in served])
    got_p = np.stack([r.pin_embedding for r in served])
    device = "cuda:0" if args.device == "cuda" else "cpu"
    gpu = Teacher.load(args.model, device=device, precision=args.precision)
    cpu = Teacher.load(args.model)
    report = {"pairs": len(served), "precision": args.precision}
    for name, teacher in (("in_process_gpu", gpu), ("in_process_cpu_fp32", cpu)):
        q, p = teacher.embeddings(queries, texts)
        report[f"{name}_max_abs_diff"] = float(
            max(np.abs(got_q - q).max(), np.abs(got_p - p).max())
        )
    print(json.dumps(report, indent=2))
    # Triton batches requests its own way: padding differs, so fp16 sums differ slightly.
    return (
        0
        if report["in_process_gpu_max_abs_diff"] < (1e-4 if args.precision == "fp32" else 5e-3)
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
