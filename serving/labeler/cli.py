"""`freshlabel label run | backfill` and `freshlabel dataset build`."""

from __future__ import annotations

import argparse
import asyncio
import json

from infra.cli_args import ISO_TIME, iso_time
from infra.config import Settings
from infra.progress import long_work


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from infra.process import stop_on_sigterm
    from serving.labeler.labeler import Labeler
    from serving.labeler.triton_scorer import TritonScorer

    stop = stop_on_sigterm()

    async def main() -> dict[str, object]:
        scorer = TritonScorer.from_settings(settings, traffic="live")
        try:
            stats = await Labeler(settings, scorer).run(
                idle_timeout_s=args.idle_timeout, max_rows=args.max_rows, should_stop=stop
            )
        finally:
            await scorer.close()
        return stats.__dict__

    print(json.dumps(asyncio.run(main())))
    return 0


@long_work
def _backfill(args: argparse.Namespace, settings: Settings) -> int:
    from infra.process import stop_on_sigterm
    from serving.labeler.backfill import backfill

    stop = stop_on_sigterm()
    stats = asyncio.run(backfill(settings, args.teacher_version, args.since, should_stop=stop))
    print(stats.model_dump_json())
    return 0


@long_work
def _dataset_build(args: argparse.Namespace, settings: Settings) -> int:
    from serving.dataset import build_training_set

    rows = build_training_set(settings, args.teacher_version, args.out, args.since)
    print(f"{settings.catalog.namespace}.{args.out}: {rows} rows of teacher {args.teacher_version}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    label = sub.add_parser("label", help="continuous teacher labeling").add_subparsers(
        dest="verb", required=True
    )
    p = label.add_parser("run", help="label impressions.enriched into the labels topic")
    p.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    p.add_argument("--max-rows", type=int, help="stop after labeling this many rows")
    p.set_defaults(handler=_run)
    p = label.add_parser("backfill", help="relabel historic enriched rows with one version")
    p.add_argument("--teacher-version", required=True, help="label with this teacher (Triton)")
    p.add_argument("--since", type=iso_time, help=f"oldest impression to relabel: {ISO_TIME}")
    p.set_defaults(handler=_backfill)

    dataset = sub.add_parser("dataset", help="student training sets").add_subparsers(
        dest="verb", required=True
    )
    p = dataset.add_parser("build", help="join enriched rows with one version's labels")
    p.add_argument("--teacher-version", required=True, help="whose labels to join")
    p.add_argument("--out", required=True, help="Iceberg table name to (re)write")
    p.add_argument("--since", type=iso_time, help=f"oldest impression: {ISO_TIME}")
    p.set_defaults(handler=_dataset_build)
