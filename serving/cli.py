"""`freshlabel teacher train | eval | export`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from infra.config import Settings
from infra.progress import long_work, note


def _train_config(args: argparse.Namespace, settings: Settings, base: dict[str, Any] | None = None):
    from serving.teacher.train import TrainConfig

    values: dict[str, Any] = TrainConfig.from_settings(settings.teacher).model_dump()
    if base:  # the recipe a trained teacher recorded
        values.update({k: v for k, v in base.items() if k in TrainConfig.model_fields})
    for flag in (
        "epochs",
        "batch_size",
        "learning_rate",
        "max_length",
        "seed",
        "trainable_layers",
        "cross_encoder_layers",
        "max_steps",
        "val_fraction",
        "device",
    ):
        value = getattr(args, flag, None)
        if value is not None:
            values[flag] = value
    return TrainConfig(**values)


def _load(args: argparse.Namespace):
    from serving.teacher.data import load_pairs

    return load_pairs(Path(args.data), args.columns)


@long_work
def _train(args: argparse.Namespace, settings: Settings) -> int:
    from serving.teacher.train import train_teacher

    pairs = _load(args)
    config = _train_config(args, settings)
    note(f"{args.data}: {len(pairs.frame)} rows, label scale 1..{pairs.scale}")
    manifest = train_teacher(
        pairs,
        Path(args.out),
        config,
        version=args.version,
        progress=note,
        cache_dir=settings.teacher_cache_dir,
    )
    val = manifest.metrics
    print(
        json.dumps(
            {
                "teacher": manifest.version,
                "out": str(Path(args.out).resolve()),
                "scale": manifest.scale,
                "train_seconds": round(manifest.timings["train_seconds"], 1),
                "total_seconds": round(manifest.timings["total_seconds"], 1),
                "train_pairs_per_s": round(manifest.timings["train_pairs_per_s"], 2),
                "validation": val.get("teacher"),
            },
            indent=2,
        )
    )
    return 0


@long_work
def _eval(args: argparse.Namespace, settings: Settings) -> int:
    from serving.teacher.evaluate import cross_validate, evaluate
    from serving.teacher.model import MANIFEST, Teacher, TeacherManifest
    from serving.teacher.report import write_report

    pairs = _load(args)
    if args.cv:
        base = None
        if args.model:
            manifest = TeacherManifest.model_validate_json(
                (Path(args.model) / MANIFEST).read_text()
            )
            base = manifest.recipe()
        config = _train_config(args, settings, base)
        result = cross_validate(
            pairs,
            args.cv,
            config,
            progress=note,
            cache_dir=settings.teacher_cache_dir,
            runtime=args.runtime or "torch",
            quantize=args.quantize or "none",
        )
        default_report = settings.state_dir / "reports" / f"{Path(args.data).stem}-cv{args.cv}"
    else:
        if not args.model:
            print("teacher eval: give --model DIR (or --cv K to cross-validate)", file=sys.stderr)
            return 2
        teacher = Teacher.load(
            Path(args.model),
            batch_size=settings.teacher.infer_batch_size,
            runtime=args.runtime or "torch",
            quantize=args.quantize or "none",
        )
        result = evaluate(teacher, pairs)
        default_report = Path(args.model) / "reports" / Path(args.data).stem
    report = write_report(result, Path(args.report) if args.report else default_report)
    summary = json.loads((report.parent / "metrics.json").read_text())
    summary["report"] = str(report)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(report.read_text())
        print(f"report: {report}")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from serving.teacher.export import ExportOptions, export_teacher

    chosen = {"model_name": args.model_name, "runtime": args.runtime, "quantize": args.quantize}
    options = ExportOptions.from_settings(
        settings, **{k: v for k, v in chosen.items() if v is not None}
    )
    target = export_teacher(Path(args.model), Path(args.repo), args.version, options)
    print(f"exported {args.model} as {options.model_name} version {args.version}: {target}")
    return 0


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="passes over the data (default: teacher.epochs)")
    p.add_argument("--batch-size", type=int, help="pairs per step (default: teacher.batch_size)")
    p.add_argument("--learning-rate", type=float, help="AdamW peak rate (teacher.learning_rate)")
    p.add_argument("--max-length", type=int, help="WordPiece budget of a pair (teacher.max_length)")
    p.add_argument("--seed", type=int, help="data split and init seed (default: teacher.seed)")
    p.add_argument("--trainable-layers", type=int, help="top encoder layers fine-tuned (6 = all)")
    p.add_argument(
        "--cross-encoder-layers", type=int, help="MiniLM layers the cross-encoder keeps (1-6)"
    )
    p.add_argument("--val-fraction", type=float, help="share of queries held out to validate")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (quick runs)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")


def register(subparsers: argparse._SubParsersAction) -> None:
    from serving.teacher.data import COLUMN_PRESETS

    teacher = subparsers.add_parser("teacher", help="train, evaluate, export the teacher")
    verbs = teacher.add_subparsers(dest="verb", required=True)
    presets = sorted(COLUMN_PRESETS)

    p = verbs.add_parser("train", help="fine-tune a teacher on labeled parquet")
    p.add_argument("--data", required=True, help="labeled parquet")
    p.add_argument("--out", required=True, help="teacher directory to write")
    p.add_argument("--columns", choices=presets, default="crowdflower", help="column preset")
    p.add_argument("--version", help="teacher version string (default: derived)")
    _add_recipe_flags(p)
    p.set_defaults(handler=_train)

    p = verbs.add_parser("eval", help="metrics vs BM25 and bi-encoder baselines, report")
    p.add_argument("--data", required=True, help="labeled parquet to evaluate on")
    p.add_argument("--model", help="teacher directory (with --cv: its recipe is reused)")
    p.add_argument("--columns", choices=presets, default="crowdflower", help="column preset")
    p.add_argument("--cv", type=int, help="query-grouped K-fold cross-validation")
    p.add_argument("--report", help="report folder (default: beside the model / state dir)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument(
        "--runtime", choices=["torch", "onnx"], help="runtime scoring the rows (default: torch)"
    )
    p.add_argument("--quantize", choices=["none", "int8"], help="with it (default: none)")
    _add_recipe_flags(p)
    p.set_defaults(handler=_eval)

    p = verbs.add_parser("export", help="write a Triton model repository version")
    p.add_argument("--model", required=True, help="teacher directory")
    p.add_argument("--repo", required=True, help="Triton model repository")
    p.add_argument("--version", required=True, type=int, help="Triton model version (1, 2, ...)")
    p.add_argument("--model-name", help="default: triton.model_name")
    p.add_argument("--runtime", choices=["torch", "onnx"], help="default: triton.runtime")
    p.add_argument("--quantize", choices=["none", "int8"], help="default: triton.quantize")
    p.set_defaults(handler=_export)
