"""One forward pass of ONNX encoder graphs, side by side: which graph is faster per row?

    .venv/bin/python -m benchmarks.bench_onnx_graphs \\
        OLD/onnx/cross_encoder.int8.onnx NEW/onnx/cross_encoder.int8.onnx --tokens 24,55

Times each graph on one row of `--tokens` random token ids (all attended; segment B from
the 7th token for graphs that take `token_type_ids`) on one intra-op thread, as a served
int8 instance runs it. The graphs take turns, `--rounds` rounds of `--runs` passes each
after 5 warm-up passes, so a host that speeds up or slows down mid-run (shared VMs do, by
25% within minutes) moves every graph alike. Prints, per graph and row length, the median
of the rounds' medians and the fastest round's median, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.cpu import machine_load
from serving.teacher.onnx_runtime import session


def row(names: list[str], tokens: int, segment_b: int = 6) -> dict[str, np.ndarray]:
    """One row of `tokens` random ids (fixed seed), all attended, segment B from position
    `segment_b`, with the inputs a graph whose inputs are `names` takes."""
    ids = np.random.default_rng(0).integers(1000, 20000, (1, tokens)).astype(np.int64)
    inputs = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": (np.arange(tokens) >= segment_b).astype(np.int64)[None, :],
    }
    return {k: v for k, v in inputs.items() if k in names}


def median_ms(onnx_session, inputs: dict[str, np.ndarray], runs: int, warmup: int) -> float:
    """Median milliseconds of `runs` forward passes, after `warmup` untimed ones (they warm
    the allocator and the caches)."""
    for _ in range(warmup):
        onnx_session.run(None, inputs)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        onnx_session.run(None, inputs)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("graphs", nargs="+", type=Path, help="ONNX graph files")
    parser.add_argument("--tokens", default="24,55", help="row lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50, help="timed passes per round")
    args = parser.parse_args()
    sessions = [session(g, threads=1) for g in args.graphs]
    load_before = machine_load()
    results = []
    for tokens in (int(t) for t in args.tokens.split(",")):
        medians: list[list[float]] = [[] for _ in sessions]
        inputs = [row([i.name for i in s.get_inputs()], tokens) for s in sessions]
        for _ in range(args.rounds):
            for k, s in enumerate(sessions):
                medians[k].append(median_ms(s, inputs[k], args.runs, warmup=5))
        for graph, m in zip(args.graphs, medians, strict=True):
            results.append(
                {
                    "graph": str(graph),
                    "tokens": tokens,
                    "median_ms": float(np.median(m)),
                    "best_round_ms": min(m),
                }
            )
    print("| graph | tokens | ms (median of rounds) | ms (best round) |")
    print("| --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['graph']} | {r['tokens']} | {r['median_ms']:.3f} | {r['best_round_ms']:.3f} |")
    print(json.dumps({"load_before": load_before, "load_after": machine_load(), "rows": results}))


if __name__ == "__main__":
    main()
