"""`freshlabel`: the one command line in front of the platform."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from infra import progress
from infra.config import Settings, load_settings
from infra.process import stop_on_sigterm

Handler = Callable[[argparse.Namespace, Settings], int]

# Each area adds its verbs through `register(subparsers)`; handlers take (args, settings).
COMMAND_MODULES: tuple[str, ...] = (
    "streams.generator.cli",
    "streams.enrich.cli",
    "quality.cli",
    "serving.cli",
    "serving.labeler.cli",
    "serving.student.cli",
    "freshlabel.deploy.cli",
    "streams.dlq_cli",
)

# Every command, grouped in the order data flows through the platform: `freshlabel --help`
# lists them so (tests/test_cli.py holds that each command is in exactly one group).
COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("stack", ("up", "down", "status")),
    ("streams", ("generate", "jobs", "sink", "tables", "dlq", "schemas")),
    ("quality", ("dq",)),
    ("labels", ("teacher", "label", "dataset", "student")),
    ("operate", ("deploy", "demo")),
)

# Top-level packages whose exceptions carry messages written for the operator.
OWN_PACKAGES = frozenset({"freshlabel", "infra", "schemas", "streams", "serving", "quality"})


def _up(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack
    from serving.teacher.export import prepare_repository

    prepare_repository(settings)
    state = stack.up(settings, durable=True if args.durable else None)
    for service in state.services:
        ports = ", ".join(f"{k} {v}" for k, v in service.ports.items())
        print(f"started {service.name} (pid {service.pid}; {ports}; log {service.log})")
    print(f"broker {settings.broker.bootstrap}; catalog {settings.catalog_uri}; up")
    return 0


def _down(args: argparse.Namespace, settings: Settings) -> int:
    from infra import stack

    stopped = stack.down(settings)
    print("stopped " + ", ".join(stopped) if stopped else "the stack was not up")
    return 0


def _status(args: argparse.Namespace, settings: Settings) -> int:
    """Services, then each worker name with its processes; exit 1 when a service is down
    or a worker failed, was killed or is crash-looping."""
    from infra import stack
    from infra.worker_status import describe, describe_group, read_statuses, worker_groups

    report = stack.status(settings)
    workers = read_statuses(settings)  # the labeler and sinks that ran on this state folder
    groups = worker_groups(settings)
    if args.json:
        print(stack.status_json(report, workers, groups))
    else:
        for s in report:
            mark = "ok  " if s.healthy else "DOWN"
            pid = f" pid {s.pid}" if s.pid else ""
            print(f"{mark} {s.name:<14}{pid} {s.detail}")
        for group in groups:
            mark = {"crash_looping": "LOOP", "dead": "DIED"}.get(group.state, "ok  ")
            print(f"{mark} {group.name:<14} {describe_group(group)}")
            for w in workers:
                if w.name == group.name:
                    print(f"       - {describe(w)}")
        dead = [w for w in workers if w.dead]
        if dead:
            print(
                f"{len(dead)} worker(s) died: "
                + ", ".join(f"{w.name} pid {w.pid} ({w.state})" for w in dead)
                + "; fix the cause and start them again (a healthy restart clears this)"
            )
    return 0 if stack.overall_health(report, workers, groups) else 1


def _schemas_check(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.evolution import check
    from schemas.registry import REGISTRY_PATH, Registry
    from schemas.topics import MODELS

    path = Path(args.registry) if args.registry else REGISTRY_PATH
    problems = check(Registry.load(path), MODELS)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) in {path}", file=sys.stderr)
        return 1
    print(f"{path}: ok")
    return 0


def _schemas_register(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.evolution import SchemaEvolutionError, register
    from schemas.registry import REGISTRY_PATH, Registry
    from schemas.topics import MODELS

    path = Path(args.registry) if args.registry else REGISTRY_PATH
    registry = Registry.load(path) if path.exists() else Registry()
    try:
        changes = register(registry, MODELS)
    except SchemaEvolutionError as exc:
        print(f"refused, not an additive change:\n{exc}", file=sys.stderr)
        return 1
    registry.save(path)
    print("\n".join(changes) if changes else "registry already matches the models")
    return 0


def _sink_run(args: argparse.Namespace, settings: Settings) -> int:
    from schemas.topics import model_for_topic
    from streams.iceberg_sink import IcebergSink

    table = args.table or model_for_topic(args.topic).table
    chosen = {"assignment": args.assignment, "workers": args.workers}
    chosen["worker_index"] = args.worker_index
    given = {k: v for k, v in chosen.items() if v is not None}
    if given:
        settings = settings.model_copy(update={"sink": settings.sink.model_copy(update=given)})
    if settings.sink.worker_index >= settings.sink.workers:
        print(
            f"--worker-index {settings.sink.worker_index} is not below --workers "
            f"{settings.sink.workers}; number workers 0..N-1",
            file=sys.stderr,
        )
        return 2
    sink = IcebergSink(
        settings,
        args.topic,
        table,
        group_id=args.group,
        batch_rows=args.batch_rows,
        batch_seconds=args.batch_seconds,
    )
    stop = stop_on_sigterm()
    stats = sink.run(idle_timeout_s=args.idle_timeout, max_rows=args.max_rows, should_stop=stop)
    print(json.dumps(stats.__dict__))
    return 0


def _tables_maintain(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    from infra.catalog import open_catalog
    from streams.maintenance import maintain

    catalog = open_catalog(settings)
    namespace = settings.catalog.namespace
    names = args.table or [t[-1] for t in catalog.list_tables(namespace)]
    now = datetime.now(UTC)
    for name in names:
        report = maintain(
            catalog.load_table(f"{namespace}.{name}"),
            closed_before=(now - timedelta(days=args.closed_after_days)).date(),
            expire_older_than=now - timedelta(hours=args.expire_after_hours),
            orphan_older_than=now - timedelta(hours=args.orphan_after_hours),
            retain_last=args.retain_last,
        )
        print(report.model_dump_json())
    return 0


@progress.long_work
def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from freshlabel import demo

    run_settings = settings.model_copy(deep=True)
    # The demo's memory broker starts empty, so it gets its own, fresh catalog too: offsets
    # recorded against an earlier broker would skip the new records.
    run_settings.state_dir = settings.state_dir / "demo-run"
    shutil.rmtree(run_settings.state_dir, ignore_errors=True)
    report = demo.run(run_settings)
    demo.print_report(report)
    print(f"report written to {demo.write_report(settings, report)}")
    return 0


class _FlowHelp(argparse.RawDescriptionHelpFormatter):
    """Lists the commands under their COMMAND_GROUPS names, in the order data flows."""

    def _format_action(self, action: argparse.Action) -> str:
        if not isinstance(action, argparse._SubParsersAction):
            return super()._format_action(action)
        helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
        name_width = max(map(len, helps)) + 2
        text_width = max(self._width - 4 - name_width, 20)
        lines: list[str] = []
        grouped = [*COMMAND_GROUPS, ("other", tuple(helps))]  # none, if the table is whole
        for group, names in grouped:
            mine = [name for name in names if name in helps]
            if mine:
                lines.append(f"  {group}:")
            for name in mine:
                wrapped = textwrap.wrap(helps.pop(name), text_width) or [""]
                lines.append(f"    {name:<{name_width}}{wrapped[0]}")
                lines += [" " * (4 + name_width) + rest for rest in wrapped[1:]]
        return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="freshlabel",
        description=__doc__,
        formatter_class=_FlowHelp,
        epilog="`freshlabel COMMAND --help` tells each command's verbs and options.",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="INFO logs, third-party load reports, and the traceback of an error",
    )
    parser.add_argument(
        "--progress",
        action="store_true",
        help="progress bars on stderr even when it is not a terminal "
        "(also FRESHLABEL_PROGRESS=1; =0 turns them off)",
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands, as the data flows"
    )

    p = sub.add_parser("up", help="start the embedded stack")
    p.add_argument("--durable", action="store_true", help="broker on S3 (SeaweedFS)")
    p.set_defaults(handler=_up)
    sub.add_parser("down", help="stop what `up` started").set_defaults(handler=_down)
    p = sub.add_parser("status", help="health of each service and worker")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_status)

    schemas = sub.add_parser("schemas", help="Iceberg field-id registry").add_subparsers(
        dest="verb", required=True
    )
    for verb, handler, about in (
        ("check", _schemas_check, "check the models against the registry (additive changes)"),
        ("register", _schemas_register, "record the models' new fields in the registry"),
    ):
        p = schemas.add_parser(verb, help=about)
        p.add_argument("--registry", help="registry file (default: schemas/registry.json)")
        p.set_defaults(handler=handler)

    sink = sub.add_parser("sink", help="topic -> Iceberg table").add_subparsers(
        dest="verb", required=True
    )
    p = sink.add_parser("run", help="commit a topic's records to its table, exactly once")
    p.add_argument("--topic", required=True, help="the topic to read, e.g. impressions")
    p.add_argument("--table", help="default: the topic model's table")
    p.add_argument("--batch-rows", type=int, help="rows per commit (default: sink.batch_rows)")
    p.add_argument(
        "--batch-seconds", type=float, help="most seconds per commit (sink.batch_seconds)"
    )
    p.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    p.add_argument("--max-rows", type=int, help="stop after committing this many rows")
    p.add_argument("--group", help="consumer group (default: freshlabel-sink-<table>)")
    p.add_argument(
        "--assignment",
        choices=("group", "static"),
        help="group: the consumer group splits partitions; static: partitions p with "
        "p %% workers == worker-index, no group (default: sink.assignment)",
    )
    p.add_argument("--workers", type=int, help="static assignment: how many workers")
    p.add_argument("--worker-index", type=int, help="static assignment: this worker, 0-based")
    p.set_defaults(handler=_sink_run)

    tables = sub.add_parser("tables", help="Iceberg table maintenance").add_subparsers(
        dest="verb", required=True
    )
    p = tables.add_parser("maintain", help="compact closed days, expire snapshots, remove orphans")
    p.add_argument("--table", action="append", help="table name (repeatable; default: all)")
    p.add_argument(
        "--closed-after-days",
        type=float,
        default=1.0,
        help="compact days that ended this long ago (default: %(default)s)",
    )
    p.add_argument(
        "--expire-after-hours",
        type=float,
        default=24.0,
        help="expire snapshots older than this (default: %(default)s)",
    )
    p.add_argument(
        "--retain-last",
        type=int,
        default=10,
        help="always keep this many snapshots (default: %(default)s)",
    )
    # Younger files may belong to a commit still in flight.
    p.add_argument(
        "--orphan-after-hours",
        type=float,
        default=1.0,
        help="remove unreferenced files older than this (default: %(default)s)",
    )
    p.set_defaults(handler=_tables_maintain)

    sub.add_parser("demo", help="run the platform end to end").set_defaults(handler=_demo)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    _describe(parser)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """A command's own --help opens with the line its parent lists it with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                if child.description is None:
                    child.description = helps.get(name)
                _describe(child)


def quiet_third_parties(verbose: bool) -> None:
    """Logs at INFO with -v; otherwise warnings only, and no load chatter: transformers'
    weight-loading bars and LOAD REPORT tables, Hugging Face hub bars, Great Expectations'
    temp-dir notices (its loggers set their own INFO level), kafka-python's refused
    connections while a broker starts (health checks already report what matters)."""
    level = logging.INFO if verbose else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:  # logging.basicConfig, plus the level on the handler itself
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(level)  # also drops what loggers that set their own level let through
        root.addHandler(handler)
        root.setLevel(level)
    if verbose:
        return
    # Read when transformers / huggingface_hub are imported (later, lazily), also by the
    # worker processes this one starts; an operator's own values win.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("transformers", "huggingface_hub"):  # the LOAD REPORT is a warning
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)


def error_line(exc: BaseException) -> str:
    """What went wrong, as one line an operator can act on (no traceback)."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or exc.title}: {e['msg']}"
            for e in exc.errors()
        )
        text = f"invalid {exc.title}: {problems}"
    elif isinstance(exc, FileNotFoundError) and exc.filename:
        text = f"{exc.filename} does not exist; check the path given (or the setting naming it)"
    elif type(exc).__module__.split(".")[0] in OWN_PACKAGES or isinstance(
        exc, ValueError | OSError
    ):
        text = str(exc) or type(exc).__name__  # written to be read: it says what to do
    else:
        text = f"{type(exc).__name__}: {exc} (freshlabel -v ... shows the traceback)"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_third_parties(args.verbose)
    if args.progress:
        progress.force(True)
    handler: Handler = args.handler
    try:
        try:
            settings = load_settings()
        except Exception as exc:
            raise SettingsError(
                f"{error_line(exc)} (from FRESHLABEL_* variables or the FRESHLABEL_CONFIG file)"
            ) from exc
        return handler(args, settings)
    except KeyboardInterrupt:
        print("freshlabel: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one clear line for operators; -v for the traceback
        if args.verbose:
            raise
        print(f"freshlabel: error: {error_line(exc)}", file=sys.stderr)
        return 2


class SettingsError(ValueError):
    """The settings did not load (the message names what to fix)."""


if __name__ == "__main__":
    sys.exit(main())
