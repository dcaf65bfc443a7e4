"""`freshlabel dq report [--since 24h] [--out DIR]`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from infra.config import Settings


def _report(args: argparse.Namespace, settings: Settings) -> int:
    from quality.report import load, parse_since, summary_lines, write_report

    since = parse_since(args.since)
    out = Path(args.out) if args.out else settings.state_dir / "dq-report"
    data = load(settings, since)
    page = write_report(settings, since, out, data)
    print("\n".join(summary_lines(data)))
    print(f"HTML report: {page}")
    return 0


def register(subparsers: Any) -> None:
    dq = subparsers.add_parser("dq", help="data quality").add_subparsers(dest="verb", required=True)
    p = dq.add_parser("report", help="summary of the checks, and an HTML report with plots")
    p.add_argument(
        "--since", default="24h", help="a duration back from now (24h, 30m, 7d) or an ISO time"
    )
    p.add_argument("--out", help="folder for index.html and plots (default <state>/dq-report)")
    p.set_defaults(handler=_report)
