"""Small builders the test modules share, so each test spells out only what it is about.

Nothing here starts a server: a module of any tier may import it. `start_sink` starts a
sink process (a client of a stack some fixture started); `reap` ends such processes by PID.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.config import Settings
from tests.conftest import ROOT, settings_env

# The fields of an impression a test rarely cares about: one request, user, query and pin,
# at the first position, in the US.
_PLAIN = {"request_id": "r", "user_id": "u", "query": "q", "pin_id": "p", "position": 1}
_US = {"country": "US", "locale": "en-US"}

# A valid relevance label as its JSON fields: four grades, the score their expected grade.
LABEL_JSON: dict[str, Any] = {
    "impression_id": "i-1",
    "query": "q",
    "pin_id": "p",
    "teacher_version": "teacher-v1",
    "label_scale": 4,
    "probs": [0.1, 0.2, 0.3, 0.4],
    "score": 2.0,
    "labeled_at": "2026-11-20T23:59:00Z",
    "input_hash": "h",
}


def impression_fields(impression_id: str, event_time: datetime, **fields: Any) -> dict[str, Any]:
    """The fields of a plain impression (`Impression(**...)`, `EnrichedImpression(**...)`).

    Args:
        impression_id: the impression's id.
        event_time: when it was shown.
        **fields: fields to override (`query=...`) or add (enriched features).

    Returns:
        Keyword arguments for an impression model.
    """
    return {**_PLAIN, **_US, "impression_id": impression_id, "event_time": event_time, **fields}


def sink_argv(table: str, *extra: str) -> list[str]:
    """`freshlabel` arguments of a sink from `impressions` into `table`, 1 s batches."""
    return [
        "sink",
        "run",
        "--topic",
        "impressions",
        "--table",
        table,
        "--batch-seconds",
        "1",
        *extra,
    ]


def start_sink(
    settings: Settings, table: str, *extra: str, log: Path | None = None
) -> subprocess.Popen[bytes]:
    """A sink process (`sink_argv`); its output goes to `log`, else to a pipe the caller
    must read (an unread pipe fills up and blocks the sink).

    Args:
        settings: the stack it runs against.
        table: the Iceberg table it writes.
        *extra: more `sink run` arguments.
        log: a file its output is appended to.

    Returns:
        The running process.
    """
    with open(log, "ab") if log else contextlib.nullcontext(subprocess.PIPE) as out:
        return subprocess.Popen(
            [sys.executable, "-m", "freshlabel.cli", *sink_argv(table, *extra)],
            env=settings_env(settings),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def reap(procs: Iterable[subprocess.Popen[bytes]], timeout_s: float | None = None) -> None:
    """Kill, by PID, each of `procs` still running, and wait for it (on a test's way out)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=timeout_s)
