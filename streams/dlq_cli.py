"""`freshlabel dlq replay`: dead letters back to their source topic (streams/dlq_replay.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from infra.cli_args import ISO_TIME, iso_time
from infra.config import Settings
from streams.dlq import Reason


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.dlq_replay import replay

    reasons = {Reason(r) for r in args.reason} if args.reason else None
    try:
        report = replay(
            settings,
            args.topic,
            reasons=reasons,
            since=args.since,
            to_topic=args.to,
            dry_run=args.dry_run,
            idle_timeout_s=args.idle_timeout,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    verb = "would replay" if args.dry_run else "replayed"
    replayed = ", ".join(f"{k} {v}" for k, v in sorted(report.replayed.items())) or "none"
    skipped = ", ".join(f"{k} {v}" for k, v in sorted(report.skipped.items())) or "none"
    print(f"read {report.read} letters from {args.topic}; {verb}: {replayed}; skipped: {skipped}")
    if report.unreadable:
        print(f"{report.unreadable} records in {args.topic} are not dead letters (left alone)")
    if report.truncated:
        print(
            f"{len(report.truncated)} letters kept only a prefix of their record; the whole "
            "record is at (topic/partition/offset): " + ", ".join(report.truncated[:20])
        )
    return 0


def register(subparsers: Any) -> None:
    dlq = subparsers.add_parser("dlq", help="dead-letter topics")
    verbs = dlq.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("replay", help="produce dead letters' records again (after a fix)")
    p.add_argument("--topic", required=True, help="the dead-letter topic, e.g. impressions.dlq")
    p.add_argument(
        "--reason",
        action="append",
        choices=[r.value for r in Reason],
        help="only letters with this reason (repeatable; default: all)",
    )
    p.add_argument(
        "--since", type=iso_time, help=f"only letters that failed at or after this; {ISO_TIME}"
    )
    p.add_argument("--to", metavar="TOPIC", help="produce here instead of the source topic")
    p.add_argument("--dry-run", action="store_true", help="count what would be sent, send nothing")
    p.add_argument(
        "--idle-timeout", type=float, default=5.0, help="stop reading after this many idle s"
    )
    p.set_defaults(handler=_replay)
