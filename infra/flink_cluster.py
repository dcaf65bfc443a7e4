"""The embedded Flink cluster: one JobManager and one TaskManager from the pip package.

Both run in the foreground (`bin/jobmanager.sh start-foreground`, which `exec`s the JVM) so
the PIDs `start_cluster` returns are the JVMs themselves and `freshlabel down` stops exactly
them. Configuration, logs, PID files, checkpoints and savepoints live under
`<state_dir>/flink/`; nothing is written into the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import requests
import yaml
from pydantic import BaseModel

from infra.config import Settings
from infra.process import ServiceRecord, start

JOBMANAGER = "flink-jobmanager"
TASKMANAGER = "flink-taskmanager"

# Copied beside our config.yaml: the console scripts read log4j settings from the conf dir.
_LOG_CONFIGS = ("log4j-console.properties", "log4j.properties", "logback-console.xml")


class FlinkError(RuntimeError):
    """The cluster or its REST API refused; the message says what to do."""


class JobSummary(BaseModel):
    """One row of the cluster's /jobs/overview."""

    jid: str
    name: str
    state: str
    start_time: int
    duration_ms: int


def flink_home(settings: Settings) -> Path:
    """`<venv>/lib/python3.X/site-packages/pyflink`: the pip package is a full distribution."""
    venv = settings.flink.venv
    found = sorted(venv.glob("lib/python3*/site-packages/pyflink/bin/jobmanager.sh"))
    if not found:
        raise FlinkError(
            f"no Flink distribution under {venv} (looked for lib/python3*/site-packages/pyflink);"
            " run `make setup` to create it, or set FRESHLABEL_FLINK__VENV"
        )
    return found[0].parents[1]


def flink_python(settings: Settings) -> Path:
    path = settings.flink.venv / "bin" / "python"
    if not path.exists():
        raise FlinkError(f"{path} is missing; run `make setup` (it creates {settings.flink.venv})")
    return path


def flink_dir(settings: Settings) -> Path:
    return settings.state_dir / "flink"


def checkpoints_dir(settings: Settings) -> Path:
    return flink_dir(settings) / "checkpoints"


def savepoints_dir(settings: Settings) -> Path:
    return flink_dir(settings) / "savepoints"


def rest_url(settings: Settings) -> str:
    return f"http://{settings.flink.host}:{settings.flink.rest_port}"


def cluster_tuning(settings: Settings) -> dict[str, Any]:
    """The cluster options that do not depend on where it runs: failover, slots, managed
    memory for RocksDB. The embedded cluster and the Kubernetes FlinkDeployment
    (freshlabel/deploy/render.py) both take them from here.

    Args:
        settings: the platform settings (flink.*).

    Returns:
        Flink option -> value.
    """
    f = settings.flink
    return {
        "jobmanager.execution.failover-strategy": "region",
        "taskmanager.numberOfTaskSlots": max(f.task_slots, f.parallelism),
        # RocksDB's block cache and write buffers live in managed memory; the heap backend
        # does not use it, so it then gets a sliver.
        "taskmanager.memory.managed.fraction": (
            f.managed_memory_fraction if f.state_backend == "rocksdb" else 0.05
        ),
        "parallelism.default": f.parallelism,
        "state.backend.type": f.state_backend,
        "execution.checkpointing.incremental": f.incremental_checkpoints,
    }


def cluster_config(settings: Settings) -> dict[str, Any]:
    """The flat config.yaml: loopback only, our ports, our folders, enough slots."""
    f = settings.flink
    base = flink_dir(settings)
    return {
        **cluster_tuning(settings),
        "jobmanager.rpc.address": f.host,
        "jobmanager.rpc.port": f.jobmanager_rpc_port,
        "jobmanager.bind-host": f.host,
        "jobmanager.memory.process.size": f.jobmanager_memory,
        "taskmanager.host": f.host,
        "taskmanager.bind-host": f.host,
        "taskmanager.memory.process.size": f.taskmanager_memory,
        "rest.address": f.host,
        "rest.bind-address": f.host,
        "rest.port": f.rest_port,
        # Ports Flink would otherwise pick at random are random anyway ("0"); keep it so that
        # two stacks on one machine never collide.
        "blob.server.port": "0",
        "taskmanager.rpc.port": "0",
        "taskmanager.data.port": "0",
        "metrics.internal.query-service.port": "0",
        "execution.checkpointing.dir": (checkpoints_dir(settings)).as_uri(),
        "execution.checkpointing.savepoint-dir": (savepoints_dir(settings)).as_uri(),
        "io.tmp.dirs": str(base / "tmp"),
        "web.tmpdir": str(base / "web-tmp"),
        "web.upload.dir": str(base / "web-upload"),
        "env.pid.dir": str(base / "pids"),
        "env.log.dir": str(settings.log_dir / "flink"),
        # The distribution's own JVM flags (module opens Flink needs on Java 17).
        "env.java.opts.all": _default_java_opts(settings),
    }


def _default_java_opts(settings: Settings) -> str:
    shipped = flink_home(settings) / "conf" / "config.yaml"
    loaded = yaml.safe_load(shipped.read_text()) or {}
    opts = loaded.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
    return str(opts)


def write_conf(settings: Settings) -> Path:
    """A private conf dir: our config.yaml plus the shipped logging configs."""
    conf = flink_dir(settings) / "conf"
    conf.mkdir(parents=True, exist_ok=True)
    home = flink_home(settings)
    for name in _LOG_CONFIGS:
        shutil.copyfile(home / "conf" / name, conf / name)
    (conf / "config.yaml").write_text(yaml.safe_dump(cluster_config(settings), sort_keys=True))
    for sub in ("tmp", "web-tmp", "web-upload", "pids", "checkpoints", "savepoints"):
        (flink_dir(settings) / sub).mkdir(parents=True, exist_ok=True)
    (settings.log_dir / "flink").mkdir(parents=True, exist_ok=True)
    return conf


def _env(settings: Settings, conf: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLINK_")}
    env.update(
        FLINK_CONF_DIR=str(conf),
        FLINK_LOG_DIR=str(settings.log_dir / "flink"),
        FLINK_PID_DIR=str(flink_dir(settings) / "pids"),
        FLINK_IDENT_STRING="freshlabel",
    )
    return env


def start_cluster(settings: Settings) -> list[ServiceRecord]:
    """Start the JobManager, then the TaskManager; returns both records (JobManager first)."""
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise FlinkError("Flink needs Java 11+ on PATH (or JAVA_HOME); install a JDK/JRE")
    conf = write_conf(settings)
    env = _env(settings, conf)
    bin_dir = flink_home(settings) / "bin"
    records = []
    for name, script in ((JOBMANAGER, "jobmanager.sh"), (TASKMANAGER, "taskmanager.sh")):
        ports = (
            {"rest": settings.flink.rest_port, "rpc": settings.flink.jobmanager_rpc_port}
            if name == JOBMANAGER
            else {}
        )
        records.append(
            start(
                name,
                ["bash", str(bin_dir / script), "start-foreground"],
                settings.log_dir / f"{name}.log",
                ports,
                env=env,
                cwd=flink_dir(settings),
            )
        )
    return records


def _get(settings: Settings, path: str, timeout_s: float = 3.0) -> Any:
    with requests.get(rest_url(settings) + path, timeout=timeout_s) as response:
        response.raise_for_status()
        return response.json()


def request(
    settings: Settings,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> Any:
    """One call to the JobManager's REST API; raises FlinkError with Flink's own message."""
    data = json.dumps(body).encode() if body is not None else None
    try:
        with requests.request(
            method,
            rest_url(settings) + path,
            data=data,
            headers={"Content-Type": "application/json"},
            timeout=timeout_s,
        ) as response:
            raw = response.content
            status = response.status_code
    except (requests.RequestException, OSError) as exc:
        raise FlinkError(
            f"Flink REST {method} {path} at {rest_url(settings)}: {exc}. Is the cluster up? "
            "Start it with FRESHLABEL_FLINK__ENABLED=true freshlabel up"
        ) from None
    if not 200 <= status < 300:
        detail = raw.decode(errors="replace")[:2000]
        raise FlinkError(f"Flink REST {method} {path}: HTTP {status}: {detail}")
    return json.loads(raw) if raw else None


def cluster_overview(settings: Settings) -> dict[str, Any] | None:
    try:
        overview: dict[str, Any] = _get(settings, "/overview")
        return overview
    except (OSError, ValueError):
        return None


def cluster_healthy(settings: Settings) -> bool:
    """The REST API answers and a TaskManager with free-or-used slots has registered."""
    overview = cluster_overview(settings)
    return bool(overview and overview.get("taskmanagers", 0) >= 1 and overview.get("slots-total"))


def list_jobs(settings: Settings) -> list[JobSummary]:
    body = request(settings, "GET", "/jobs/overview")
    return [
        JobSummary(
            jid=j["jid"],
            name=j["name"],
            state=j["state"],
            start_time=j["start-time"],
            duration_ms=j["duration"],
        )
        for j in body.get("jobs", [])
    ]


def health_detail(settings: Settings) -> str:
    overview = cluster_overview(settings) or {}
    try:
        jobs = [j for j in list_jobs(settings) if j.state in ("RUNNING", "CREATED", "RESTARTING")]
    except FlinkError:
        jobs = []
    running = ", ".join(f"{j.name} {j.state} ({j.jid})" for j in jobs) or "no running jobs"
    return (
        f"REST {rest_url(settings)}: {overview.get('taskmanagers', 0)} taskmanager(s), "
        f"{overview.get('slots-available', 0)}/{overview.get('slots-total', 0)} slots free; "
        f"{running}"
    )


def require_cluster(settings: Settings) -> None:
    if not cluster_healthy(settings):
        raise FlinkError(
            f"no healthy Flink cluster at {rest_url(settings)}; start the stack with "
            "FRESHLABEL_FLINK__ENABLED=true freshlabel up (or set flink.enabled: true)"
        )
