"""Start, watch and stop one background service by its PID (never by name)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel


class ServiceError(RuntimeError):
    """A service would not start, or is not healthy; the message says which and why."""


class ServiceRecord(BaseModel):
    """What `up` started: enough to check on it and to stop exactly it."""

    name: str
    pid: int
    argv: list[str]
    log: Path
    ports: dict[str, int]
    started_at: datetime
    # Process start time from /proc/PID/stat: with the PID, it identifies the process.
    start_ticks: int


def port_free(host: str, port: int) -> bool:
    """Nothing listens on host:port. (A bind test would also refuse ports that only have
    TIME_WAIT connections left from a service we just stopped, which servers can reuse.)"""
    return not port_open(host, port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; the usual default
    elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1", offset: int = 0) -> int:
    """A port nothing listens on now, for a service that binds it later.

    It lies outside the kernel's ephemeral range, so that no outgoing connection made in the
    meantime can take it (a port picked from that range was once taken by a client socket
    before Flink's REST endpoint bound it), and it is not handed out twice by this process.

    Args:
        host: the address the service will bind.
        offset: port + offset must be free and outside that range too (SeaweedFS serves gRPC
            on port + 10000).

    Returns:
        The port.

    Raises:
        ServiceError: no such port is free.
    """
    low, high = ephemeral_ports()
    outside = [*range(10000, low), *range(high + 1, 65536)]
    candidates = [p for p in outside if p + offset < low or high < p + offset < 65536]
    for _ in range(200 if candidates else 0):
        port = random.choice(candidates)
        if port in _handed_out or any(not _bindable(host, p) for p in {port, port + offset}):
            continue
        _handed_out.add(port)
        return port
    raise ServiceError(
        f"no free port outside the ephemeral range {low}-{high} on {host}: "
        "free some, or narrow net.ipv4.ip_local_port_range"
    )


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def start(
    name: str,
    argv: Sequence[str],
    log: Path,
    ports: Mapping[str, int],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ServiceRecord:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        # A new session so the service outlives the CLI and its process group is its own.
        proc = subprocess.Popen(
            list(argv),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    fields = _stat(proc.pid)
    if fields is None:
        raise ServiceError(f"{name}: process {proc.pid} vanished at start; see {log}")
    return ServiceRecord(
        name=name,
        pid=proc.pid,
        start_ticks=int(fields[19]),
        argv=list(argv),
        log=log,
        ports=dict(ports),
        started_at=datetime.now(UTC),
    )


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], start time [19])."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return None


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (None if it is gone)."""
    fields = _stat(pid)
    return int(fields[19]) if fields is not None else None


def pid_alive(pid: int, ticks: int) -> bool:
    """True if the PID is alive *and* is the very process that had it at `ticks` (PIDs get
    reused): its start time must match."""
    fields = _stat(pid)
    # A zombie (state Z) has exited; it only waits to be reaped.
    if fields is None or fields[0] == "Z":
        return False
    return int(fields[19]) == ticks


def is_running(record: ServiceRecord) -> bool:
    return pid_alive(record.pid, record.start_ticks)


def wait_until(
    record: ServiceRecord,
    check: Callable[[], bool],
    timeout_s: float,
    what: str,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not is_running(record):
            raise ServiceError(
                f"{record.name} exited while waiting for {what}; its log {record.log} ends:\n"
                f"{log_tail(record.log)}"
            )
        if check():
            return
        time.sleep(0.2)
    raise ServiceError(
        f"{record.name} (pid {record.pid}) not ready after {timeout_s:.0f}s waiting for {what}; "
        f"log {record.log} ends:\n{log_tail(record.log)}"
    )


def stop(record: ServiceRecord, timeout_s: float = 15.0) -> bool:
    """SIGTERM the service's process group, SIGKILL after `timeout_s`. False if not running."""
    if not is_running(record):
        return False
    # start() made the service leader of its own process group, so pgid == pid.
    for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(record.pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            _reap(record.pid)
            if not is_running(record) and not _group_alive(record.pid):
                return True
            time.sleep(0.1)
    return not is_running(record)


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Only zombies left in the group count as gone.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_on_sigterm() -> Callable[[], bool]:
    """SIGTERM/SIGINT end a long-running loop after its current step (a final commit
    included) instead of killing it mid-way."""
    requested = threading.Event()

    def handler(signum: int, frame: object) -> None:
        requested.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return requested.is_set
