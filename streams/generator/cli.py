"""`freshlabel generate`: write a synthetic search world to Kafka, with its ground truth."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from infra.config import EVENT_TOPICS, Settings

# CLI flag -> GeneratorSettings field.
_OVERRIDES = {
    "impressions": "impressions",
    "rate": "rate",
    "seed": "seed",
    "sim_days": "sim_days",
    "truth_dir": "truth_dir",
    "late_share": "late_share",
    "sample_rows": "sample_rows",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "generate",
        help="produce a synthetic search world (pins, captions, boards, impressions, engagements)",
        description=__doc__,
    )
    p.add_argument("--impressions", type=int, help="stop after this many impressions")
    p.add_argument("--rate", type=float, help="events per second; 0 = as fast as possible")
    p.add_argument("--seed", type=int, help="same seed + settings = identical events")
    p.add_argument("--sim-days", type=int, help="simulated days the impressions span")
    p.add_argument("--truth-dir", type=Path, help="ground truth folder (default <state>/world)")
    p.add_argument("--no-kafka", action="store_true", help="generate and write truth only")
    p.add_argument(
        "--labeled-sample",
        type=Path,
        metavar="PATH",
        help="also write a labeled parquet sample (query, pin text features, true label)",
    )
    p.add_argument("--sample-rows", type=int, help="rows of the labeled sample")
    p.add_argument("--late-share", type=float, help="share of events delivered late (0..1)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_generate)


def apply_overrides(settings: Settings, args: argparse.Namespace) -> Settings:
    update = {
        field: getattr(args, flag)
        for flag, field in _OVERRIDES.items()
        if getattr(args, flag, None) is not None
    }
    generator = settings.generator.model_validate({**settings.generator.model_dump(), **update})
    return settings.model_copy(update={"generator": generator})


def _generate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.generator.run import run

    settings = apply_overrides(settings, args)
    report = run(settings, kafka=not args.no_kafka, sample_path=args.labeled_sample)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0
    target = "produced (acknowledged)" if report.acknowledged is not None else "generated"
    print(f"{'topic':<16}{target:>24}")
    for topic in EVENT_TOPICS:
        print(f"{topic:<16}{report.counts[topic]:>24,}")
    print(f"{'total':<16}{report.events:>24,}")
    print(f"{report.seconds:.1f} s, {report.events_per_s:,.0f} events/s")
    if report.late:
        print(f"late (delivered after their event time): {report.late}")
    print(f"ground truth: {report.truth_dir}")
    if report.sample_path is not None:
        print(f"labeled sample: {report.sample_path} ({report.sample_rows:,} rows)")
    return 0
