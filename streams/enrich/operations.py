"""Deploy, find and stop the enrichment job on the embedded Flink cluster or a session cluster.

Runs in the platform environment: submission shells out to the Flink environment's
interpreter (`streams/enrich/job.py`); everything else is Flink's REST API, which needs no
py4j (PyFlink's own stop_with_savepoint is broken in 2.3).

Only `flink.host:rest_port` names the cluster: nothing here reads PIDs or the cluster's
FLINK_HOME. A cluster on this machine (the embedded one, or any on a loopback address)
shares this filesystem, so its savepoints go under the state folder; a remote session
cluster's go to `deploy.savepoints_uri` on object storage, the folder the operator's
FlinkDeployment uses too, and a restore takes that URI as `stop` printed it.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlparse

from pydantic import BaseModel

from infra.config import PROJECT_ROOT, Settings
from infra.flink_cluster import (
    FlinkError,
    JobSummary,
    checkpoints_dir,
    flink_python,
    list_jobs,
    request,
    require_cluster,
    savepoints_dir,
)
from streams.enrich.clock import ensure_clock_topic

JOB_NAMES = ("enrich",)
ACTIVE_STATES = ("INITIALIZING", "CREATED", "RUNNING", "RESTARTING", "FAILING", "CANCELLING")
TERMINAL_STATES = ("FINISHED", "CANCELED", "FAILED", "SUSPENDED")


class Deployment(BaseModel):
    job_id: str
    job_name: str
    from_savepoint: str | None = None


def _flink_job_name(settings: Settings, job: str) -> str:
    if job not in JOB_NAMES:
        raise FlinkError(f"unknown job {job!r}; known jobs: {', '.join(JOB_NAMES)}")
    return settings.flink.job_name


def cluster_is_local(settings: Settings) -> bool:
    """Whether the cluster at flink.host shares this machine's filesystem.

    Args:
        settings: the platform settings (flink.enabled, flink.host).

    Returns:
        True for the embedded cluster or any cluster on a loopback address; False for a
        remote session cluster.
    """
    if settings.flink.enabled or settings.flink.host == "localhost":
        return True
    try:
        return ipaddress.ip_address(settings.flink.host).is_loopback
    except ValueError:  # a host name: a remote cluster
        return False


def state_uris(settings: Settings) -> tuple[str, str]:
    """Where the job's checkpoints and savepoints go, as URIs.

    Args:
        settings: the platform settings.

    Returns:
        (checkpoints, savepoints): under `<state>/flink` for a cluster on this machine,
        else `deploy.checkpoints_uri` and `deploy.savepoints_uri` (object storage, the
        folders the operator's FlinkDeployment uses too).
    """
    if cluster_is_local(settings):
        return checkpoints_dir(settings).as_uri(), savepoints_dir(settings).as_uri()
    return settings.deploy.checkpoints_uri, settings.deploy.savepoints_uri


def savepoint_target(settings: Settings) -> str:
    """The directory `stop --savepoint` asks the cluster to write into, as a URI
    (`state_uris`; a local one is created first).

    Args:
        settings: the platform settings.

    Returns:
        The savepoints URI.
    """
    if cluster_is_local(settings):
        savepoints_dir(settings).mkdir(parents=True, exist_ok=True)
    return state_uris(settings)[1]


def active_job(settings: Settings, job: str = "enrich") -> JobSummary | None:
    """The job of that name that is running (or about to), if any."""
    name = _flink_job_name(settings, job)
    active = [j for j in list_jobs(settings) if j.name == name and j.state in ACTIVE_STATES]
    return max(active, key=lambda j: j.start_time) if active else None


def deploy(
    settings: Settings, job: str = "enrich", from_savepoint: str | None = None
) -> Deployment:
    """Submit the job to the cluster and wait until all of its tasks run."""
    name = _flink_job_name(settings, job)
    require_cluster(settings)
    if (running := active_job(settings, job)) is not None:
        raise FlinkError(
            f"{name} is already {running.state} as job {running.jid}; stop it first "
            "(`freshlabel jobs stop enrich --savepoint`)"
        )
    if from_savepoint and "://" not in from_savepoint:
        if not cluster_is_local(settings):
            raise FlinkError(
                f"savepoint {from_savepoint} is a path on this machine, which the cluster at "
                f"{settings.flink.host} cannot read; pass the URI `jobs stop` printed "
                f"(under {settings.deploy.savepoints_uri})"
            )
        if not Path(from_savepoint).exists():
            raise FlinkError(
                f"savepoint {from_savepoint} does not exist; pass the path `stop` printed"
            )
    # The job subscribes to the clock topic too; a missing topic would fail the source.
    ensure_clock_topic(settings)
    argv = [str(flink_python(settings)), "-m", "streams.enrich.job", "--settings-json", "-"]
    if from_savepoint:
        argv += ["--from-savepoint", from_savepoint]
    # Settings travel on stdin, not in a file or argv, since they may hold broker secrets.
    try:
        result = subprocess.run(
            argv,
            input=settings.model_dump_json(),
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=settings.flink.submit_timeout_s,
        )
    except subprocess.TimeoutExpired:
        raise FlinkError(
            f"submitting {name} took over {settings.flink.submit_timeout_s:.0f}s "
            "(flink.submit_timeout_s); see the JobManager log under the state dir's logs/"
        ) from None
    if result.returncode != 0:
        raise FlinkError(f"submitting {name} failed:\n{_error_lines(result.stderr)}")
    submitted = json.loads(result.stdout.strip().splitlines()[-1])
    deployment = Deployment(
        job_id=submitted["job_id"], job_name=name, from_savepoint=from_savepoint
    )
    wait_running(settings, deployment.job_id, settings.flink.submit_timeout_s)
    return deployment


def _error_lines(stderr: str) -> str:
    """The lines of a Java/Python traceback that say what went wrong, not where."""
    lines = [ln for ln in stderr.splitlines() if ln.strip() and not ln.lstrip().startswith("at ")]
    return "\n".join(lines[-25:])


def job_detail(settings: Settings, job_id: str) -> dict[str, object]:
    detail: dict[str, object] = request(settings, "GET", f"/jobs/{job_id}")
    return detail


def wait_running(settings: Settings, job_id: str, timeout_s: float) -> None:
    """Until the job and every one of its tasks run; raises with Flink's root cause if the
    job fails first."""
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        detail = job_detail(settings, job_id)
        state = str(detail.get("state"))
        vertices = detail.get("vertices", [])
        assert isinstance(vertices, list)
        if state == "RUNNING" and vertices and all(v["status"] == "RUNNING" for v in vertices):
            return
        if state in TERMINAL_STATES:
            raise FlinkError(f"job {job_id} is {state}: {root_cause(settings, job_id)}")
        time.sleep(0.5)
    raise FlinkError(f"job {job_id} still {state} after {timeout_s:.0f}s")


def root_cause(settings: Settings, job_id: str) -> str:
    try:
        body = request(settings, "GET", f"/jobs/{job_id}/exceptions")
    except FlinkError as exc:
        return str(exc)
    root = (body.get("exceptionHistory") or {}).get("entries") or []
    if root:
        return str(root[0].get("stacktrace", ""))[:3000]
    return str(body.get("root-exception") or "no exception recorded")


def savepoint_path(location: str, local: bool = True) -> str:
    """Flink answers `file:/dir/savepoint-x`; for a cluster on this machine the local path is
    what `--from-savepoint` takes, for a remote one the URI as it is (s3://...)."""
    parsed = urlparse(location)
    return parsed.path if local and parsed.scheme == "file" else location


def wait_terminal(settings: Settings, job_id: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    state = "unknown"
    while time.monotonic() < deadline:
        state = str(job_detail(settings, job_id).get("state"))
        if state in TERMINAL_STATES:
            return state
        time.sleep(0.3)
    raise FlinkError(f"job {job_id} still {state} after {timeout_s:.0f}s")


def stop(settings: Settings, job: str = "enrich", savepoint: bool = True) -> str | None:
    """Stop the running job; with `savepoint`, take one first and return its path."""
    name = _flink_job_name(settings, job)
    require_cluster(settings)
    running = active_job(settings, job)
    if running is None:
        raise FlinkError(f"{name} is not running; `freshlabel jobs list` shows the cluster's jobs")
    timeout_s = settings.flink.savepoint_timeout_s
    if not savepoint:
        request(settings, "PATCH", f"/jobs/{running.jid}?mode=cancel")
        wait_terminal(settings, running.jid, timeout_s)
        return None
    target = savepoint_target(settings)
    # drain=false: no MAX_WATERMARK, so buffered impressions stay in the savepoint and are
    # emitted after the restore instead of being flushed with incomplete features.
    trigger = request(
        settings,
        "POST",
        f"/jobs/{running.jid}/stop",
        {"targetDirectory": target, "drain": False},
    )
    request_id = trigger["request-id"]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = request(settings, "GET", f"/jobs/{running.jid}/savepoints/{request_id}")
        if status["status"]["id"] == "COMPLETED":
            operation = status.get("operation") or {}
            if "failure-cause" in operation:
                cause = operation["failure-cause"].get("stack-trace", "")[:3000]
                raise FlinkError(f"savepoint of {name} ({running.jid}) failed: {cause}")
            wait_terminal(settings, running.jid, timeout_s)
            return savepoint_path(str(operation["location"]), cluster_is_local(settings))
        time.sleep(0.5)
    raise FlinkError(f"savepoint of {name} ({running.jid}) not done after {timeout_s:.0f}s")
