"""`freshlabel up | down | status`: the embedded stack as one unit.

`up` records every process it starts in `<state_dir>/stack.json`; `down` stops exactly
those PIDs (after checking each still runs the program we started), never anything by name.

`up` on a stack that is partly dead (a service SIGKILLed, OOM-killed) repairs it: it says
which recorded services no longer run (PID gone or reused), drops their stale entries and
PID files, and starts only those again, with the services that depend on them (the broker
with its object store, the Flink JobManager and TaskManager together); the healthy rest
keeps running, so a running Flink job or teacher is not interrupted. The durable broker
keeps its data across this (it lives in the object store's folder under the state dir); an
in-memory broker's records are gone, and `up` says so. When nothing recorded runs any more
(a reboot), `up` forgets the old record and starts the stack afresh on the same folders.
A stack that is fully up is refused as before ("already up").
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from infra import triton
from infra.broker import broker_healthy, start_broker
from infra.catalog import ensure_all_tables, open_catalog
from infra.config import Settings
from infra.flink_cluster import (
    JOBMANAGER,
    TASKMANAGER,
    cluster_healthy,
    health_detail,
    start_cluster,
)
from infra.object_store import object_store_healthy, start_object_store
from infra.process import (
    ServiceRecord,
    is_running,
    port_free,
    stop,
    wait_until,
)
from infra.topics import ensure_topics
from infra.worker_status import WorkerGroup, WorkerStatus

log = logging.getLogger(__name__)

# Restarting a service restarts these with it: the broker keeps its log in the object
# store, and the Flink JobManager and TaskManager are started as a pair.
_DEPENDENTS: dict[str, tuple[str, ...]] = {
    "object_store": ("broker",),
    JOBMANAGER: (TASKMANAGER,),
    TASKMANAGER: (JOBMANAGER,),
}
# The `_ports_needed` keys (their first word) of each service.
_PORT_GROUP = {
    "object_store": "object_store",
    "broker": "broker",
    JOBMANAGER: "flink",
    TASKMANAGER: "flink",
    triton.SERVICE: "triton",
}


class StackError(RuntimeError):
    """The stack cannot be brought up or down; the message says what to do."""


class StackState(BaseModel):
    started_at: datetime
    profile: str
    services: list[ServiceRecord] = Field(default_factory=list)


class ServiceHealth(BaseModel):
    name: str
    healthy: bool
    detail: str
    pid: int | None = None
    ports: dict[str, int] = Field(default_factory=dict)
    log: str | None = None


def state_path(settings: Settings) -> Path:
    return settings.state_dir / "stack.json"


def read_state(settings: Settings) -> StackState | None:
    path = state_path(settings)
    if not path.exists():
        return None
    return StackState.model_validate_json(path.read_text())


def _write_state(settings: Settings, state: StackState) -> None:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(state.model_dump_json(indent=2))
    tmp.replace(path)
    for service in state.services:
        (settings.state_dir / f"{service.name}.pid").write_text(f"{service.pid}\n")


@contextmanager
def _stack_lock(settings: Settings) -> Iterator[None]:
    """One `up`/`down` at a time per state folder."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    with open(settings.state_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StackError(
                f"another freshlabel up/down is running on {settings.state_dir}; wait for it"
            ) from None
        yield


def _ports_needed(settings: Settings, durable: bool) -> dict[str, int]:
    ports: dict[str, int] = {}
    if settings.broker.embedded:
        ports["broker"] = settings.broker.port
        if durable:
            store = settings.object_store
            ports.update(
                {
                    "object_store s3": store.s3_port,
                    "object_store master": store.master_port,
                    "object_store volume": store.volume_port,
                    "object_store filer": store.filer_port,
                }
            )
    if settings.flink.enabled:
        ports["flink rest"] = settings.flink.rest_port
        ports["flink rpc"] = settings.flink.jobmanager_rpc_port
    ports.update(triton.ports_needed(settings))
    return ports


def _refuse_taken_ports(
    settings: Settings, durable: bool, only: Sequence[str] | None = None
) -> None:
    env_names = {
        "broker": "FRESHLABEL_BROKER__PORT",
        "object_store s3": "FRESHLABEL_OBJECT_STORE__S3_PORT",
        "object_store master": "FRESHLABEL_OBJECT_STORE__MASTER_PORT",
        "object_store volume": "FRESHLABEL_OBJECT_STORE__VOLUME_PORT",
        "object_store filer": "FRESHLABEL_OBJECT_STORE__FILER_PORT",
        "flink rest": "FRESHLABEL_FLINK__REST_PORT",
        "flink rpc": "FRESHLABEL_FLINK__JOBMANAGER_RPC_PORT",
        **triton.PORT_ENV,
    }
    # A service stopped a moment ago may still be closing its listener: give it a few seconds.
    deadline = time.monotonic() + 5.0
    needed = {
        what: port
        for what, port in _ports_needed(settings, durable).items()
        if only is None or what.split()[0] in {_PORT_GROUP.get(name, name) for name in only}
    }
    while time.monotonic() < deadline and not all(
        port_free(settings.broker.host, port) for port in needed.values()
    ):
        time.sleep(0.25)
    taken = [
        f"{what} port {port} on {settings.broker.host} is taken by another process "
        f"(free it or set {env_names[what]})"
        for what, port in needed.items()
        if not port_free(settings.broker.host, port)
    ]
    if taken:
        raise StackError("cannot start the stack: " + "; ".join(taken))


def up(settings: Settings, durable: bool | None = None) -> StackState:
    """Start what the config says is embedded, create topics and tables; all or nothing."""
    if durable is not None:
        settings.broker.durable = durable
    with _stack_lock(settings):
        existing = read_state(settings)
        if existing and existing.services:
            dead = [s for s in existing.services if not is_running(s)]
            if not dead:
                alive = ", ".join(f"{s.name} (pid {s.pid})" for s in existing.services)
                raise StackError(
                    f"the stack is already up in {settings.state_dir}: {alive}. "
                    "Run `freshlabel down` first, or use another FRESHLABEL_STATE_DIR"
                )
            if len(dead) < len(existing.services):
                return _repair(settings, existing, dead, durable)
            log.warning(
                "nothing of the stack recorded in %s runs any more (%s): starting it afresh; "
                "data folders are kept",
                state_path(settings),
                _listing(dead),
            )
            _forget(settings, existing)
        _refuse_taken_ports(settings, settings.broker.durable)
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        state = StackState(started_at=datetime.now(UTC), profile=settings.profile)
        try:
            if settings.broker.embedded:
                if settings.broker.durable:
                    store = start_object_store(settings)
                    state.services.append(store)
                    _write_state(settings, state)
                    wait_until(
                        store,
                        lambda: object_store_healthy(settings),
                        settings.object_store.health_timeout_s,
                        "S3 /healthz",
                    )
                broker = start_broker(settings)
                state.services.append(broker)
                _write_state(settings, state)
                wait_until(
                    broker,
                    lambda: broker_healthy(settings, timeout_s=1.0),
                    settings.broker.health_timeout_s,
                    "a metadata response",
                )
            flink = []
            if settings.flink.enabled:
                # Started before topics and tables are created: the JVMs boot meanwhile.
                flink = start_cluster(settings)
                state.services.extend(flink)
                _write_state(settings, state)
            teacher = None
            if triton.enabled(settings):
                teacher = triton.start_triton(settings)
                state.services.append(teacher)
                _write_state(settings, state)
            ensure_topics(settings)
            ensure_all_tables(settings)
            if teacher is not None:
                triton.wait_ready(settings, teacher)
            if flink:
                wait_until(
                    flink[0],
                    lambda: all(is_running(s) for s in flink) and cluster_healthy(settings),
                    settings.flink.health_timeout_s,
                    "a Flink REST overview with a registered TaskManager",
                )
        except BaseException:
            _stop_all(settings, state)
            raise
        return state


def _listing(services: Sequence[ServiceRecord]) -> str:
    return ", ".join(f"{s.name} (pid {s.pid})" for s in services)


def _forget(settings: Settings, state: StackState) -> None:
    """Drop the record of a stack none of whose processes runs: stack.json and PID files."""
    for service in state.services:
        (settings.state_dir / f"{service.name}.pid").unlink(missing_ok=True)
    state_path(settings).unlink(missing_ok=True)


def _restart_set(names: Sequence[str], dead: Sequence[ServiceRecord]) -> list[str]:
    """The dead services plus what depends on them, in the recorded (start) order."""
    wanted = {s.name for s in dead}
    for name in list(wanted):
        wanted.update(_DEPENDENTS.get(name, ()))
    return [name for name in names if name in wanted]


def _start_one(settings: Settings, name: str, started: list[ServiceRecord]) -> None:
    """Start service `name` as `up` would and wait until it answers; every record started
    is appended to `started` at once, so the caller can stop it if a later step fails."""
    if name == "object_store":
        store = start_object_store(settings)
        started.append(store)
        wait_until(
            store,
            lambda: object_store_healthy(settings),
            settings.object_store.health_timeout_s,
            "S3 /healthz",
        )
    elif name == "broker":
        broker = start_broker(settings)
        started.append(broker)
        wait_until(
            broker,
            lambda: broker_healthy(settings, timeout_s=1.0),
            settings.broker.health_timeout_s,
            "a metadata response",
        )
    elif name in (JOBMANAGER, TASKMANAGER):
        if any(s.name in (JOBMANAGER, TASKMANAGER) for s in started):
            return  # started as a pair with the other one
        flink = start_cluster(settings)
        started.extend(flink)
        wait_until(
            flink[0],
            lambda: all(is_running(s) for s in flink) and cluster_healthy(settings),
            settings.flink.health_timeout_s,
            "a Flink REST overview with a registered TaskManager",
        )
    elif name == triton.SERVICE:
        teacher = triton.start_triton(settings)
        started.append(teacher)
        triton.wait_ready(settings, teacher)
    else:
        raise StackError(
            f"stack.json in {settings.state_dir} names an unknown service {name!r}; "
            "run `freshlabel down`, then `freshlabel up`"
        )


def _repair(
    settings: Settings, state: StackState, dead: list[ServiceRecord], durable: bool | None
) -> StackState:
    """Start again the recorded services that died (and their dependents); keep the rest."""
    names = [s.name for s in state.services]
    recorded_durable = "object_store" in names
    if settings.broker.embedded and durable and not recorded_durable:
        raise StackError(
            f"{_listing(dead)} died in {settings.state_dir}, whose stack runs an in-memory "
            "broker (started without --durable); run `freshlabel down`, then "
            "`freshlabel up --durable`"
        )
    # Repair the stack that was recorded: a durable one stays durable without the flag.
    settings.broker.durable = recorded_durable
    restart = _restart_set(names, dead)
    kept_running = [s for s in state.services if s.name not in restart]
    log.warning(
        "%s recorded in %s no longer running (PID gone or reused): restarting %s%s%s",
        _listing(dead),
        state_path(settings),
        ", ".join(restart),
        f"; kept running: {_listing(kept_running)}" if kept_running else "",
        "; durable broker data is kept" if recorded_durable else "",
    )
    if "broker" in restart and settings.broker.embedded and not recorded_durable:
        log.warning(
            "the broker kept its records in memory: they are lost, and offsets recorded in "
            "Iceberg refer to the old log; use `freshlabel up --durable` to keep them"
        )
    # Live services restarting with a dead one are stopped by their recorded PID.
    for service in reversed(state.services):
        if service.name in restart and is_running(service):
            log.warning("stopping %s (pid %d) to restart it", service.name, service.pid)
            stop(service)
    for name in restart:
        (settings.state_dir / f"{name}.pid").unlink(missing_ok=True)
    _write_state(settings, state.model_copy(update={"services": kept_running}))
    started: list[ServiceRecord] = []
    try:
        _refuse_taken_ports(settings, recorded_durable, only=restart)
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        for name in restart:
            _start_one(settings, name, started)
        fresh = {s.name: s for s in started}
        repaired = state.model_copy(
            update={"services": [fresh.get(s.name, s) for s in state.services]}
        )
        _write_state(settings, repaired)
        ensure_topics(settings)
        ensure_all_tables(settings)
    except BaseException:
        for service in reversed(started):
            stop(service)
        # Back to the record of the dead services, so the next `up` tries again.
        _write_state(settings, state)
        raise
    return repaired


def _stop_all(settings: Settings, state: StackState) -> list[str]:
    stopped = []
    for service in reversed(state.services):
        if stop(service):
            stopped.append(f"{service.name} (pid {service.pid})")
        (settings.state_dir / f"{service.name}.pid").unlink(missing_ok=True)
    state_path(settings).unlink(missing_ok=True)
    return stopped


def down(settings: Settings) -> list[str]:
    """Stop exactly the processes `up` recorded, newest first; returns what was stopped."""
    with _stack_lock(settings):
        state = read_state(settings)
        if state is None:
            return []
        stopped = _stop_all(settings, state)
        still = [s for s in state.services if is_running(s)]
        if still:
            raise StackError(
                "could not stop " + ", ".join(f"{s.name} (pid {s.pid})" for s in still)
            )
        return stopped


def _service_health(
    record: ServiceRecord | None, name: str, check: Callable[[], bool], what: str
) -> ServiceHealth:
    if record is None:
        return ServiceHealth(name=name, healthy=False, detail="not started by `freshlabel up`")
    base = {"name": name, "pid": record.pid, "ports": record.ports, "log": str(record.log)}
    if not is_running(record):
        return ServiceHealth(
            healthy=False,
            detail=f"process {record.pid} is not running; `freshlabel up` restarts it",
            **base,
        )
    ok = check()
    return ServiceHealth(healthy=ok, detail=what if ok else f"no answer to {what}", **base)


def status(settings: Settings) -> list[ServiceHealth]:
    state = read_state(settings)
    records = {s.name: s for s in state.services} if state else {}
    report: list[ServiceHealth] = []
    if settings.broker.embedded:
        if settings.broker.durable or "object_store" in records:
            report.append(
                _service_health(
                    records.get("object_store"),
                    "object_store",
                    lambda: object_store_healthy(settings),
                    "S3 /healthz ok",
                )
            )
        report.append(
            _service_health(
                records.get("broker"),
                "broker",
                lambda: broker_healthy(settings),
                f"metadata ok at {settings.broker.bootstrap}",
            )
        )
    else:
        ok = broker_healthy(settings)
        report.append(
            ServiceHealth(
                name="broker",
                healthy=ok,
                detail=f"external {settings.broker.bootstrap}: "
                + ("metadata ok" if ok else "no metadata response"),
            )
        )
    if settings.flink.enabled or JOBMANAGER in records:
        report += _flink_health(settings, records)
    if triton.enabled(settings) or triton.SERVICE in records:
        report.append(
            _service_health(
                records.get(triton.SERVICE),
                triton.SERVICE,
                lambda: triton.triton_ready(settings),
                triton.health_detail(settings),
            )
        )
    elif settings.triton.url:
        ok = triton.remote_ready(settings)
        report.append(
            ServiceHealth(
                name=triton.SERVICE,
                healthy=ok,
                detail=f"remote {settings.triton.url}: model {settings.triton.model_name!r} "
                + ("ready" if ok else "not ready"),
            )
        )
    report.append(_catalog_health(settings))
    return report


def _flink_health(settings: Settings, records: dict[str, ServiceRecord]) -> list[ServiceHealth]:
    detail = health_detail(settings)
    return [
        _service_health(records.get(name), name, lambda: cluster_healthy(settings), what)
        for name, what in (
            (JOBMANAGER, detail),
            (TASKMANAGER, "registered with the JobManager"),
        )
    ]


def _catalog_health(settings: Settings) -> ServiceHealth:
    where = settings.catalog.uri or settings.catalog_uri
    try:
        catalog = open_catalog(settings)
        tables = catalog.list_tables(settings.catalog.namespace)
    except Exception as exc:
        return ServiceHealth(name="catalog", healthy=False, detail=f"{where}: {exc}")
    return ServiceHealth(
        name="catalog",
        healthy=True,
        detail=f"{settings.catalog.type} catalog {where}: {len(tables)} tables",
    )


def overall_health(
    report: list[ServiceHealth],
    workers: Sequence[WorkerStatus] = (),
    groups: Sequence[WorkerGroup] = (),
) -> bool:
    """Every service answers, and no worker (labeler, sink) shown failed, killed or
    crash-looping."""
    return (
        all(s.healthy for s in report)
        and not any(w.dead for w in workers)
        and not any(g.dead for g in groups)
    )


def status_json(
    report: list[ServiceHealth],
    workers: Sequence[WorkerStatus] = (),
    groups: Sequence[WorkerGroup] = (),
) -> str:
    """`freshlabel status --json`: services, worker processes (oldest first), one summary
    per worker name, and the dead workers again on their own."""
    body: dict[str, Any] = {
        "healthy": overall_health(report, workers, groups),
        "services": [s.model_dump() for s in report],
        "workers": [w.report() for w in workers],
        "worker_groups": [{**g.model_dump(), "dead": g.dead} for g in groups],
        "dead_workers": [w.report() for w in workers if w.dead],
    }
    return json.dumps(body, indent=2)
