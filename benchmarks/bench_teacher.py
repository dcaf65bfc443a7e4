"""Teacher throughput: eager torch, the ONNX runtime, and the ONNX runtime through Triton.

    .venv/bin/python -m benchmarks.bench_teacher --model .freshlabel/teachers/crowdflower
    .venv/bin/python -m benchmarks.bench_teacher --model DIR --device cuda \
        --precision fp32,fp16 --concurrency 1,16,64,256       # on a GPU host (gpu_check.sh)

Measures in one run, on pairs drawn from the same data and machine:
- in-process `Teacher.predict` in batches of 64 (pairs/s, per-batch p50/p99) for each
  `--in-process` path (default: eager torch fp32, ONNX fp32, ONNX int8);
- through a real Triton server (gRPC, dynamic batching, one pair per request unless
  `--request-pairs`) at client concurrency 1, 16 and 64 requests (pairs/s, per-request
  p50/p99) for each `--triton` path
  (default: the platform's configured runtime/quantization, `triton.runtime/quantize`).

Every measurement scores pairs that the teacher instance has not seen (disjoint rows for
each warm-up and each measurement): the bi-encoder's embedding LRU then only hits where the
data itself repeats a text (CrowdFlower's queries repeat, its product texts rarely do), so
the rates are unique pairs/s. Prints a markdown table; paste it under the command in
docs/benchmarks.md.

CPU per pair: CPU milliseconds (user + system) per scored pair, of this process for the
in-process rows and of the Triton server with its Python backend stubs (from /proc) for the
Triton rows; the client's own CPU is not counted there but shown beside it (this process,
which does nothing else meanwhile: on 2 cores it shares the cores with Triton). CPU time is
what sizes CPU serving, and it moves much less with the machine's load than pairs/s does
(the load average is recorded).

Host speed: shared 2-core VMs run the same work 25% faster or slower from one minute to the
next with no load of their own. Every run therefore times a fixed probe before and after (one
forward pass of the teacher's int8 cross-encoder over 66 tokens, one thread, median of 200)
and the CPU steal over the run: compare pairs/s of two runs only at similar probe times.
`--probe-model` keeps the probe's graph fixed when comparing teachers whose graphs differ.
`--device cuda` runs the in-process torch teacher on the GPU and Triton with the `gpu` model
config (KIND_GPU, eager torch; `teacher export` writes it); pairs/s is then the GPU's capacity.
There every path is eager torch, once per `--precision` (`triton.gpu_precision` when served).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_onnx_graphs import median_ms, row
from benchmarks.cpu import CpuMeter, cpu_ticks, machine_load
from infra import triton
from infra.config import Settings
from infra.process import ServiceRecord, free_port, stop
from serving.client import TeacherClient
from serving.teacher.data import load_pairs
from serving.teacher.export import ExportOptions, export_teacher
from serving.teacher.model import MANIFEST, Teacher, TeacherManifest
from serving.teacher.onnx_runtime import export_onnx, onnx_file, session

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "crowdflower" / "train.parquet"


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def in_process(teacher: Teacher, pool: PairPool, n: int, batch: int) -> dict:
    warm_q, warm_t = pool.take(batch)
    teacher.predict(warm_q, warm_t)  # warm-up, on rows not measured
    queries, texts = pool.take(n)
    latencies = []
    cpu_started = time.process_time()  # every thread of this process (torch's pool too)
    started = time.perf_counter()
    for i in range(0, len(queries), batch):
        t0 = time.perf_counter()
        teacher.predict(queries[i : i + batch], texts[i : i + batch])
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    cpu_s = time.process_time() - cpu_started
    return {
        "pairs_per_s": len(queries) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_ms_per_pair": cpu_s * 1000.0 / len(queries),
        "cores_used": cpu_s / elapsed,
    }


def host_probe_ms(model: Path, tokens: int = 66, runs: int = 200) -> float:
    """Median milliseconds of one int8 cross-encoder forward pass over `tokens` tokens on one
    thread: how fast this machine is right now, whatever else the run measures."""
    export_onnx(model, "int8")
    probe = session(onnx_file(model, "cross_encoder", "int8"), threads=1)
    inputs = row([i.name for i in probe.get_inputs()], tokens, segment_b=8)
    return median_ms(probe, inputs, runs, warmup=20)


class PairPool:
    """Rows of the data in a fixed random order, each handed out once."""

    def __init__(self, queries: list[str], texts: list[str], seed: int = 0) -> None:
        order = np.random.default_rng(seed).permutation(len(queries))
        self.queries = [queries[i] for i in order]
        self.texts = [texts[i] for i in order]
        self.next = 0

    def take(self, n: int) -> tuple[list[str], list[str]]:
        if self.next + n > len(self.queries):
            raise SystemExit(
                f"the data has {len(self.queries)} rows; this run needs more unseen pairs: "
                "lower --pairs or give a larger --data"
            )
        start, self.next = self.next, self.next + n
        return self.queries[start : self.next], self.texts[start : self.next]


async def through_triton(
    settings: Settings,
    pool: PairPool,
    n: int,
    concurrency: int,
    server_pid: int,
    request_pairs: int = 1,
    embeddings: bool = False,
) -> dict:
    async with TeacherClient.from_settings(
        settings, batch_size=request_pairs, max_in_flight=concurrency, timeout_s=300.0
    ) as client:
        await client.check()
        await client.score(*pool.take(concurrency))  # warm-up, on rows not measured
        queries, texts = pool.take(n)
        latencies: list[float] = []
        slots = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with slots:
                t0 = time.perf_counter()
                end = i + request_pairs
                await client.score(queries[i:end], texts[i:end], embeddings=embeddings)
                latencies.append(time.perf_counter() - t0)

        meter = CpuMeter(server_pid).start()
        started, client_cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one(i) for i in range(0, len(queries), request_pairs)))
        elapsed, client_cpu = time.perf_counter() - started, time.process_time() - client_cpu
        meter.stop()
    return {
        "pairs_per_s": len(queries) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "cpu_ms_per_pair": meter.cpu_s * 1000.0 / len(queries),
        "cores_used": meter.cpu_s / elapsed,
        "client_cpu_ms_per_pair": client_cpu * 1000.0 / len(queries),
    }


def serve(
    model: Path,
    work: Path,
    runtime: str,
    quantize: str,
    threads: int,
    device: str = "cpu",
    precision: str = "fp32",
) -> tuple[Settings, ServiceRecord]:
    repo = work / f"repo-{runtime}-{quantize}-{precision}"
    # Instances, threads and batching as configured; this row's numerics.
    options = ExportOptions.from_settings(
        Settings(),
        runtime=runtime,
        quantize=quantize,
        gpu_precision=precision,
        **({"model_threads": threads} if threads >= 0 else {}),
    )
    export_teacher(model, repo, 1, options)
    settings = Settings(
        state_dir=work / f"state-{runtime}-{quantize}-{precision}",
        triton={
            "repository": repo,
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "model_config_name": "gpu" if device != "cpu" else None,
        },
    )
    record = triton.start_triton(settings)
    triton.wait_ready(settings, record)
    return settings, record


def _paths(text: str) -> list[tuple[str, str, str]]:
    """ "torch/none,onnx/int8,torch/none@fp16" -> [("torch", "none", "fp32"),
    ("onnx", "int8", "fp32"), ("torch", "none", "fp16")]."""
    out = []
    for item in filter(None, text.split(",")):
        item, _, precision = item.partition("@")
        runtime, _, quantize = item.partition("/")
        out.append((runtime, quantize or "none", precision or "fp32"))
    return out


def _name(runtime: str, quantize: str, precision: str = "fp32") -> str:
    kind = {"torch": "eager torch", "onnx": "ONNX Runtime"}.get(runtime, runtime)
    return f"{kind} {precision if quantize == 'none' else quantize}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / ".freshlabel/teachers/crowdflower")
    parser.add_argument(
        "--probe-model",
        type=Path,
        help="the teacher whose int8 cross-encoder graph times the host probe (default: "
        "--model); keep one fixed to compare probes across teachers",
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--columns", default="crowdflower")
    parser.add_argument("--pairs", type=int, default=512, help="pairs per measurement")
    parser.add_argument("--batch", type=int, default=64, help="in-process batch size")
    parser.add_argument("--concurrency", default="1,16,64", help="requests on the wire at once")
    parser.add_argument(
        "--request-pairs",
        type=int,
        default=1,
        help="pairs per Triton request (1: every pair its own request; the labeler sends "
        "labeler.request_rows)",
    )
    configured = Settings().triton
    parser.add_argument(
        "--in-process",
        default="torch/none,onnx/none,onnx/int8",
        help="runtime/quantize paths measured in-process, comma separated ('' for none)",
    )
    parser.add_argument(
        "--triton",
        default=f"{configured.runtime}/{configured.quantize}",
        help="runtime/quantize paths served by Triton (default: the configured one)",
    )
    # The flags of the first version of this benchmark (docs/benchmarks.md quotes them).
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="the earlier run: eager torch fp32 and int8, in-process and through Triton",
    )
    parser.add_argument("--skip-in-process", action="store_true", help="Triton rows only")
    parser.add_argument(
        "--threads",
        type=int,
        default=-1,
        help="intra-op threads (0: one per core; default: triton.model_threads for Triton, "
        "torch's/onnxruntime's own default in-process)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (GPU config in Triton)")
    parser.add_argument(
        "--precision",
        default="fp32",
        help="with --device cuda: float precisions of the torch paths, e.g. fp32,fp16",
    )
    parser.add_argument(
        "--embeddings",
        action="store_true",
        help="Triton requests also ask for query_embedding / pin_embedding (the labeler's "
        "drift monitor does, with labeler.student_dir set)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quantize:
        args.in_process = args.triton = "torch/none,torch/int8"
    if args.skip_in_process:
        args.in_process = ""

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pairs = load_pairs(args.data, args.columns)
    pool = PairPool(pairs.queries, pairs.pin_texts)
    manifest = TeacherManifest.model_validate_json((args.model / MANIFEST).read_text())
    results: dict[str, dict] = {}
    load_before = machine_load()
    steal_before = cpu_ticks()
    probe_before = host_probe_ms(args.probe_model or args.model) if args.device == "cpu" else None
    precisions = args.precision.split(",") if args.device != "cpu" else ["fp32"]
    on_gpu = args.device != "cpu"
    if on_gpu:  # GPU instances run torch whatever the CPU runtime is
        args.in_process = args.in_process and ",".join(f"torch/none@{p}" for p in precisions)
        args.triton = args.triton and ",".join(f"torch/none@{p}" for p in precisions)
    for runtime, quantize, precision in _paths(args.in_process):
        device = args.device if runtime == "torch" else "cpu"
        teacher = Teacher.load(
            args.model,
            batch_size=args.batch,
            device=device,
            quantize=quantize,
            runtime=runtime,
            threads=max(args.threads, 0),
            precision=precision,
        )
        name = _name(runtime, quantize, precision)
        results[f"in-process, {name}, batch {args.batch}"] = in_process(
            teacher, pool, args.pairs, args.batch
        )
        del teacher
    with tempfile.TemporaryDirectory() as tmp:
        for runtime, quantize, precision in _paths(args.triton):
            settings, record = serve(
                args.model, Path(tmp), runtime, quantize, args.threads, args.device, precision
            )
            try:
                for c in (int(x) for x in args.concurrency.split(",")):
                    name = f"Triton, {_name(runtime, quantize, precision)}, concurrency {c}"
                    if args.request_pairs > 1:
                        name += f" x {args.request_pairs} pairs"
                    if args.embeddings:
                        name += " + embeddings"
                    results[name] = asyncio.run(
                        through_triton(
                            settings,
                            pool,
                            args.pairs,
                            c,
                            record.pid,
                            args.request_pairs,
                            args.embeddings,
                        )
                    )
            finally:
                stop(record)
    load_after = machine_load()
    probe_after = host_probe_ms(args.probe_model or args.model) if args.device == "cpu" else None
    steal_after = cpu_ticks()
    steal = (steal_after[0] - steal_before[0]) / max(steal_after[1] - steal_before[1], 1)
    print(
        f"teacher {manifest.version}; {args.pairs} unseen pairs per row from {args.data.name}; "
        f"torch threads {torch.get_num_threads()}; device {args.device}; "
        f"load average {load_before['load_avg_1_5_15']} -> {load_after['load_avg_1_5_15']} "
        f"({load_before['at']} -> {load_after['at']}, {load_after['cpus']} cores); "
        f"CPU steal {steal:.1%}"
    )
    if probe_before is not None:
        print(
            f"host probe (int8 cross-encoder, 66 tokens, 1 thread): {probe_before:.2f} ms "
            f"before, {probe_after:.2f} ms after"
        )
    print(
        f"training: {manifest.timings.get('train_pairs_per_s', float('nan')):.1f} pairs/s "
        f"({manifest.settings.get('trainable_layers')} trainable layers, "
        f"max_length {manifest.max_length})"
    )
    print("| path | pairs/s | p50 ms | p99 ms | CPU ms/pair | cores used | client CPU ms/pair |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        client = r.get("client_cpu_ms_per_pair")
        print(
            f"| {name} | {r['pairs_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} "
            f"| {r['cpu_ms_per_pair']:.1f} | {r['cores_used']:.2f} "
            f"| {'-' if client is None else f'{client:.2f}'} |"
        )
    eager = next((r for n, r in results.items() if "eager torch fp32" in n), None)
    if eager is not None:
        for name, r in results.items():
            print(f"{name}: {r['pairs_per_s'] / eager['pairs_per_s']:.2f}x in-process eager fp32")
    summary = {
        "load_before": load_before,
        "load_after": load_after,
        "device": args.device,
        "cpu_steal": round(steal, 4),
        "host_probe_ms": [probe_before, probe_after],
    }
    print(json.dumps({**summary, "results": results}))
    if args.json:
        args.json.write_text(json.dumps({**summary, "results": results}, indent=2))


if __name__ == "__main__":
    main()
