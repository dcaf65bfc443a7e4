"""`freshlabel student train | eval | export`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from infra.cli_args import ISO_TIME, iso_time
from infra.config import Settings
from infra.progress import long_work, note


def _teacher_dir(args: argparse.Namespace, settings: Settings) -> Path:
    if args.teacher:
        return Path(args.teacher)
    if settings.teacher.model_dir is not None:
        return Path(settings.teacher.model_dir)
    return settings.teacher.teachers_dir / "crowdflower"


@long_work
def _train(args: argparse.Namespace, settings: Settings) -> int:
    from serving.student.model import StudentConfig
    from serving.student.train import train_from_table

    values = {
        k: getattr(args, k)
        for k in ("epochs", "batch_size", "lr", "seed")
        if getattr(args, k) is not None
    }
    if args.hard_labels:
        values["targets"] = "hard"
    student = train_from_table(
        settings,
        args.training_set,
        Path(args.out),
        _teacher_dir(args, settings),
        teacher_version=args.teacher_version,
        until=args.until,
        config=StudentConfig(**values),
        version=args.version,
        progress=note,
        snapshot_id=args.snapshot_id,
    )
    if args.json:
        print(student.manifest.model_dump_json(indent=2))
    return 0


@long_work
def _eval(args: argparse.Namespace, settings: Settings) -> int:
    from serving.student.evaluate import evaluate_student
    from serving.student.model import Student

    report = evaluate_student(
        settings,
        Path(args.model),
        args.training_set,
        _teacher_dir(args, settings),
        truth_dir=Path(args.truth) if args.truth else None,
        since=args.since,
        until=args.until,
        progress=not args.json,
    )
    student = Student.load(Path(args.model))
    student.manifest.metrics = report
    student.write_manifest(Path(args.model))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"student {report['student']} on {report['rows']} rows of {report['table']}")
    rows = [("vs teacher", report["vs_teacher"])]
    if "vs_truth" in report:
        truth = report["vs_truth"]
        rows += [("vs truth", truth["student"]), ("teacher vs truth", truth["teacher"])]
    print(f"{'':18} {'accuracy':>9} {'qwk':>7} {'ndcg@10':>8}  auroc")
    for name, m in rows:
        auroc = " ".join(f"{k}:{v}" for k, v in m["auroc"].items())
        print(f"{name:18} {m['accuracy']:9.4f} {m['qwk']:7.4f} {m['ndcg10']:8.4f}  {auroc}")
    if "vs_truth" in report:
        cosine = report["vs_truth"]["bi_cosine"]["ndcg10"]
        print(f"{'bi cosine vs truth':18} {'':9} {'':7} {cosine:8.4f}")
    cost = report["serving"]
    print(
        f"serving: {cost['pairs_per_s']:,.0f} pairs/s in batches of {cost['batch']}, one pair "
        f"p50 {cost['request_p50_ms']} ms / p99 {cost['request_p99_ms']} ms (features given)"
    )
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    from serving.student.export import export_student
    from serving.student.model import Student

    repo = (
        Path(args.repo)
        if args.repo
        else settings.triton.repository or (settings.state_dir / "triton-repo")
    )
    target = export_student(Path(args.model), Path(repo), args.version)
    version = Student.load(Path(args.model)).version
    print(f"exported student {version} as student version {args.version}: {target}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    student = subparsers.add_parser("student", help="train, evaluate, export students")
    verbs = student.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("train", help="distill a student from a training-set table")
    p.add_argument("--training-set", required=True, help="Iceberg table (`dataset build --out`)")
    p.add_argument("--out", required=True, help="student directory to write")
    p.add_argument("--teacher", help="the labeling teacher's directory (features)")
    p.add_argument("--teacher-version", help="whose labels (default: the table's only one)")
    p.add_argument(
        "--until",
        type=iso_time,
        help=f"only impressions before this (rest: evaluation); {ISO_TIME}",
    )
    p.add_argument("--hard-labels", action="store_true", help="the teacher's argmax, not probs")
    p.add_argument("--epochs", type=int, help="most passes over the rows (default: 30)")
    p.add_argument("--batch-size", type=int, help="pairs per step (default: 256)")
    p.add_argument("--lr", type=float, help="AdamW peak learning rate (default: 0.002)")
    p.add_argument("--seed", type=int, help="split, shuffle and init seed (default: 0)")
    p.add_argument("--snapshot-id", type=int, help="the table's snapshot (default: current)")
    p.add_argument("--version", help="student version (default: student-<UTC time>)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(handler=_train)

    p = verbs.add_parser("eval", help="quality vs truth and teacher, serving cost")
    p.add_argument("--model", required=True, help="student directory")
    p.add_argument("--training-set", required=True, help="table whose rows are evaluated")
    p.add_argument("--teacher", help="the labeling teacher's directory (features)")
    p.add_argument("--truth", help="a generated world's truth directory (hidden grades)")
    p.add_argument(
        "--since", type=iso_time, help=f"first impression (default: after training's); {ISO_TIME}"
    )
    p.add_argument("--until", type=iso_time, help=f"end of the evaluated window; {ISO_TIME}")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_eval)

    p = verbs.add_parser("export", help="add the student to the Triton repository")
    p.add_argument("--model", required=True, help="student directory")
    p.add_argument("--repo", help="Triton model repository (default: triton.repository)")
    p.add_argument("--version", required=True, type=int, help="Triton model version (1, 2, ...)")
    p.set_defaults(handler=_export)
