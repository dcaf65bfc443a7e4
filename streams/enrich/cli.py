"""`freshlabel jobs deploy|list|stop`: the enrichment job on the embedded Flink cluster or a
session cluster at flink.host:rest_port (docs/operations.md)."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from infra.config import Settings
from infra.flink_cluster import FlinkError, list_jobs, require_cluster
from streams.enrich import operations

Verb = Callable[[argparse.Namespace, Settings], int]


def _flink_errors(verb: Verb) -> Verb:
    """A verb whose cluster answers with a FlinkError prints it on one line and exits 1."""

    @functools.wraps(verb)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return verb(args, settings)
        except FlinkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


@_flink_errors
def _deploy(args: argparse.Namespace, settings: Settings) -> int:
    deployment = operations.deploy(settings, args.job, from_savepoint=args.from_savepoint)
    restored = f" from savepoint {deployment.from_savepoint}" if deployment.from_savepoint else ""
    print(f"deployed {deployment.job_name} as job {deployment.job_id}{restored}")
    return 0


@_flink_errors
def _list(args: argparse.Namespace, settings: Settings) -> int:
    require_cluster(settings)
    jobs = list_jobs(settings)
    if not jobs:
        print("no jobs on the cluster")
    for job in sorted(jobs, key=lambda j: j.start_time, reverse=True):
        started = datetime.fromtimestamp(job.start_time / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(f"{job.jid}  {job.state:<10} {job.name:<24} started {started}Z")
    return 0


@_flink_errors
def _stop(args: argparse.Namespace, settings: Settings) -> int:
    path = operations.stop(settings, args.job, savepoint=args.savepoint)
    if path is None:
        print(f"cancelled {args.job} (no savepoint)")
    else:
        # The path alone on the last line, so scripts can take it with `tail -1`.
        print(f"stopped {args.job} with a savepoint; redeploy with --from-savepoint:")
        print(path)
    return 0


def register(subparsers: Any) -> None:
    jobs = subparsers.add_parser("jobs", help="Flink jobs on the cluster at flink.host:rest_port")
    verbs = jobs.add_subparsers(dest="verb", required=True)
    p = verbs.add_parser("deploy", help="submit a job (it keeps running after the CLI exits)")
    p.add_argument("job", choices=operations.JOB_NAMES, help="the job's name")
    p.add_argument(
        "--from-savepoint",
        metavar="PATH",
        help="restore state from a savepoint (a URI for a remote cluster)",
    )
    p.set_defaults(handler=_deploy)
    p = verbs.add_parser("list", help="jobs on the cluster and their states")
    p.set_defaults(handler=_list)
    p = verbs.add_parser("stop", help="stop a job, by default taking a savepoint first")
    p.add_argument("job", choices=operations.JOB_NAMES, help="the job's name")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--savepoint",
        dest="savepoint",
        action="store_true",
        default=True,
        help="take a savepoint and print its path (the default)",
    )
    group.add_argument(
        "--no-savepoint", dest="savepoint", action="store_false", help="cancel without one"
    )
    p.set_defaults(handler=_stop)
