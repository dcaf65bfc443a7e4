"""Progress on stderr for long command-line work: tqdm bars and timestamped stage lines.

Bars are for a person watching: they show when stderr is a terminal, or when forced with
`freshlabel --progress` / `FRESHLABEL_PROGRESS=1` (`FRESHLABEL_PROGRESS=0` turns them all
off), so captured output (tests, logs, pipes) is never garbled. A bar shows when its caller
asks (`show=True`) or, by default, inside a `scope()`: long commands open one, so library
loops (the encoders' batches) get bars there and stay silent everywhere else (the labeler,
a Triton backend). `note` prints one stage line (always, like a log line) above any bar.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

ENV = "FRESHLABEL_PROGRESS"
_scopes = 0
P = ParamSpec("P")
R = TypeVar("R")


def force(on: bool) -> None:
    """Bars on (even when stderr is not a terminal) or off, here and in child processes."""
    os.environ[ENV] = "1" if on else "0"


@contextmanager
def scope() -> Iterator[None]:
    """Long work: bars that do not say `show` show while it runs."""
    global _scopes
    _scopes += 1
    try:
        yield
    finally:
        _scopes -= 1


def long_work(handler: Callable[P, R]) -> Callable[P, R]:
    """A command handler whose run is a `scope()` (its library loops may show bars)."""

    @functools.wraps(handler)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with scope():
            return handler(*args, **kwargs)

    return run


def enabled(show: bool | None = None) -> bool:
    """Whether a bar shows now: `show` True (the caller asks), False, None (in a scope)."""
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("0", "false", "no", "off") or show is False or (show is None and not _scopes):
        return False
    return value in ("1", "true", "yes", "on") or sys.stderr.isatty()


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str = "",
    unit: str = "it",
    show: bool | None = None,
    **options: Any,
) -> Any:
    """A tqdm bar on stderr over `iterable` (or updated by hand up to `total`); when not
    `enabled(show)` it is disabled: a plain pass-through that prints nothing."""
    from tqdm import tqdm

    options = {"dynamic_ncols": True, "leave": False, **options}
    disable = not enabled(show)
    return tqdm(
        iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=disable, **options
    )


def counted(
    batches: Sequence[Sized], desc: str, unit: str, show: bool | None = None
) -> Iterator[Any]:
    """Each batch in turn, its rows counted on a bar (the total is the rows of all)."""
    with progress_bar(total=sum(map(len, batches)), desc=desc, unit=unit, show=show) as bar:
        for batch in batches:
            yield batch
            bar.update(len(batch))


def note(message: str) -> None:
    """One timestamped line on stderr (printed above a running bar, not through it)."""
    from tqdm import tqdm

    tqdm.write(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr)
    sys.stderr.flush()
