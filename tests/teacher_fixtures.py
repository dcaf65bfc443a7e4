"""Small labeled data for teacher tests: a world-style parquet whose grade follows how
many query words the pin's title shares (learnable in a few steps, no shared data)."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from infra import stack, triton
from infra.config import Settings
from infra.process import ServiceRecord, free_port, stop
from schemas import EnrichedImpression
from tests.conftest import ROOT, make_settings, settings_env
from tests.helpers import impression_fields

QUERIES = [
    "oak desk",
    "red running shoes",
    "ceramic vase",
    "wool blanket",
    "camping tent",
    "glass lamp",
    "leather wallet",
    "garden hose",
]
FILLER = ["modern", "vintage", "large", "classic", "handmade", "blue", "set", "home"]
OTHER = ["kitchen towel", "phone case", "dog bowl", "wall clock", "bike bell", "tea cup"]


def world_sample(path: Path, per_query: int = 12, seed: int = 3) -> Path:
    rng = random.Random(seed)
    rows = []
    for query in QUERIES:
        words = query.split()
        for i in range(per_query):
            grade = 1 + i % 4
            if grade == 4:
                title = f"{rng.choice(FILLER)} {query}"
            elif grade == 3:
                title = f"{rng.choice(FILLER)} {words[-1]} {rng.choice(FILLER)}"
            elif grade == 2:
                title = f"{words[0]} {rng.choice(OTHER)}"
            else:
                title = rng.choice(OTHER)
            rows.append(
                {
                    "query": query,
                    "title": title,
                    "description": None if i % 3 == 0 else f"A {title} for the home.",
                    "caption": f"photo of a {title}" if i % 2 else None,
                    "board_titles": ["my favourites", "home ideas"] if i % 4 == 1 else None,
                    "top_queries": [query] if grade >= 3 and i % 2 else None,
                    "link_title": None,
                    "label": grade,
                }
            )
    schema = pa.schema(
        [
            ("query", pa.string()),
            ("title", pa.string()),
            ("description", pa.string()),
            ("caption", pa.string()),
            ("board_titles", pa.list_(pa.string())),
            ("top_queries", pa.list_(pa.string())),
            ("link_title", pa.string()),
            ("label", pa.int64()),
        ]
    )
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def labeler_env(settings: Settings) -> dict[str, str]:
    """Environment for a `freshlabel label run` subprocess of the labeler tests: the
    stack's settings, its Triton ports, small batches and short retries."""
    env = settings_env(settings)
    t = settings.triton
    env.update(
        FRESHLABEL_TRITON__GRPC_PORT=str(t.grpc_port),
        FRESHLABEL_TRITON__HTTP_PORT=str(t.http_port),
        FRESHLABEL_TRITON__RETRIES="1",
        FRESHLABEL_LABELER__BATCH_ROWS="200",
        FRESHLABEL_LABELER__RETRY_MAX_S="2",
    )
    return env


def start_cli(
    settings: Settings, log: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`freshlabel ARGS` as a subprocess with the labeler tests' environment (plus `env`),
    its output appended to `log` (a pipe nobody reads could fill and stall it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "freshlabel.cli", *args],
            env={**labeler_env(settings), **(env or {})},
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


T0 = datetime(2026, 10, 1, tzinfo=UTC)
TITLES = ["modern oak desk", "vintage ceramic vase", "wool blanket set", "kitchen towel"]


def search_traffic(
    n: int,
    prefix: str,
    step: timedelta = timedelta(seconds=1),
    request_prefix: str = "",
    titles_by_pin: bool = False,
    captions: bool = False,
) -> list[EnrichedImpression]:
    """Few distinct (query, pin, text) combinations, as in real search traffic.

    Args:
        n: how many impressions, `step` apart from `T0`.
        prefix: their ids are `{prefix}-{i}`.
        step: the event time between two impressions.
        request_prefix: put before the request ids (`r{i // 5}`).
        titles_by_pin: a pin keeps one title (else titles cycle on their own).
        captions: pin-0 has a caption.

    Returns:
        The impressions, in order: query `i % 4`, pin `i % 6`, position `i % 5 + 1`.
    """
    return [
        EnrichedImpression(
            **impression_fields(
                f"{prefix}-{i}",
                T0 + step * i,
                request_id=f"{request_prefix}r{i // 5}",
                user_id=f"u{i % 13}",
                query=QUERIES[i % 4],
                pin_id=f"pin-{i % 6}",
                position=i % 5 + 1,
                title=TITLES[i % 6 % 4 if titles_by_pin else i % 4],
                caption="photo of a desk" if captions and i % 6 == 0 else None,
            )
        )
        for i in range(n)
    ]


@dataclass
class LabelerStack:
    """A running stack whose Triton serves a teacher."""

    settings: Settings
    triton: ServiceRecord  # replaced when a test restarts the server


@contextmanager
def labeler_stack(state_dir: Path, repo: Path, **triton_settings: Any) -> Iterator[LabelerStack]:
    """A stack on free ports with Triton serving `repo`, for the block; afterwards the
    Triton then running (a test may have replaced the one `up` started) and the stack
    stop, by PID. Only for fixtures marked `@starts_servers`.

    Args:
        state_dir: the stack's state folder.
        repo: the Triton model repository.
        **triton_settings: more `triton` settings (`repository_poll_s=1`).

    Yields:
        The settings and the Triton service.
    """
    settings = make_settings(
        state_dir,
        triton={
            "repository": repo,
            "http_port": free_port(),
            "grpc_port": free_port(),
            "metrics_port": free_port(),
            "retries": 1,
            **triton_settings,
        },
        labeler={"batch_rows": 200, "retry_initial_s": 0.5, "retry_max_s": 2.0},
    )
    # A configured repository makes `up` start Triton too (and wait until it is ready).
    state = stack.up(settings)
    running = LabelerStack(settings, next(s for s in state.services if s.name == triton.SERVICE))
    try:
        yield running
    finally:
        stop(running.triton)
        stack.down(settings)
