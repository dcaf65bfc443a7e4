"""Shared fixtures: a real embedded stack (Tansu + SQLite catalog) on free ports, and the two
test tiers.

`make test-unit` runs `pytest -m "not stack and not slow"`: no broker, object store, Flink or
Triton, under a minute. `make test-stack` runs the rest; `make test` runs both. A test is
`stack` when it uses a fixture that starts servers (one built with `@starts_servers`, such as
`running_stack`, or any fixture that depends on one: marked here, at collection) or when its
module or itself is marked `stack`. A test outside the stack tier that starts a service all
the same (through infra.process.start) fails at once, naming the fix, so none slips into the
unit tier. `slow` marks server-free tests that take long (training a model), by hand or
through a fixture built with `@takes_long`; they run with the stack tier.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from infra import process, stack
from infra.config import Settings
from infra.process import free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


F = TypeVar("F", bound=Callable[..., object])
# fixture attribute -> the marker of every test that uses such a fixture
_TIER_OF_FIXTURE = {"starts_servers": "stack", "takes_long": "slow"}


def starts_servers(fixture: F) -> F:
    """Declare that a fixture starts servers; every test that uses it, directly or through
    another fixture, lands in the stack tier. Put it under `@pytest.fixture`."""
    fixture.starts_servers = True  # type: ignore[attr-defined]
    return fixture


def takes_long(fixture: F) -> F:
    """Declare that a fixture takes long without servers (it trains a model): every test that
    uses it is marked `slow`, the second tier. Put it under `@pytest.fixture`."""
    fixture.takes_long = True  # type: ignore[attr-defined]
    return fixture


def _fixture_tiers(item: pytest.Item) -> set[str]:
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return set()
    return {
        marker
        for name in info.names_closure
        for fixturedef in info.name2fixturedefs.get(name, ())
        for attribute, marker in _TIER_OF_FIXTURE.items()
        if getattr(fixturedef.func, attribute, False)
    }


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for marker in sorted(_fixture_tiers(item)):
            if item.get_closest_marker(marker) is None:
                item.add_marker(marker)


_in_stack_tier = False
_real_start = process.start


def _guarded_start(name: str, *args: Any, **kwargs: Any) -> process.ServiceRecord:
    if not _in_stack_tier:
        raise RuntimeError(
            f"this test starts {name} but is not in the stack tier: use a fixture built with "
            "@starts_servers (running_stack), or mark the test or its module pytest.mark.stack"
        )
    return _real_start(name, *args, **kwargs)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Point every module's `start` (from infra.process) at the guard, and open it only for
    tests in the stack tier; module-scoped fixtures set up and torn down inside this window."""
    global _in_stack_tier
    for module in list(sys.modules.values()):
        # The module's own namespace only: a lazy module's __getattr__ could import.
        if getattr(module, "__dict__", {}).get("start") is _real_start:
            setattr(module, "start", _guarded_start)  # noqa: B010
    _in_stack_tier = item.get_closest_marker("stack") is not None
    try:
        return (yield)
    finally:
        _in_stack_tier = False


def make_settings(state_dir: Path, **overrides: Any) -> Settings:
    """Settings for an isolated stack: its own state folder and free ports."""
    return Settings(
        state_dir=state_dir,
        broker={"port": free_port()},
        object_store={
            "s3_port": free_port(offset=10000),
            "master_port": free_port(offset=10000),
            "volume_port": free_port(offset=10000),
            "filer_port": free_port(offset=10000),
        },
        **overrides,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment that makes a `freshlabel` subprocess use these settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRESHLABEL_")}
    env.update(
        FRESHLABEL_STATE_DIR=str(settings.state_dir),
        FRESHLABEL_BROKER__PORT=str(settings.broker.port),
        FRESHLABEL_OBJECT_STORE__S3_PORT=str(settings.object_store.s3_port),
        FRESHLABEL_OBJECT_STORE__MASTER_PORT=str(settings.object_store.master_port),
        FRESHLABEL_OBJECT_STORE__VOLUME_PORT=str(settings.object_store.volume_port),
        FRESHLABEL_OBJECT_STORE__FILER_PORT=str(settings.object_store.filer_port),
    )
    return env


def freshlabel(
    settings: Settings, *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `freshlabel *args` in a subprocess on these settings (or `env`) and wait."""
    return subprocess.run(
        [sys.executable, "-m", "freshlabel.cli", *args],
        env=settings_env(settings) if env is None else env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "state")


@pytest.fixture(scope="module")
@starts_servers
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One real stack per test module, stopped by PID afterwards."""
    with stack_running(make_settings(tmp_path_factory.mktemp("stack") / "state")) as settings:
        yield settings


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"SKIPPED LOUDLY: {path} is absent; this test needs the shared data set")
    return path


@contextmanager
def stack_running(settings: Settings) -> Iterator[Settings]:
    """The stack of `settings` up for the block, and down (by PID) after it, however it ends.

    Only for fixtures marked `@starts_servers`, or tests in the stack tier."""
    stack.up(settings)
    try:
        yield settings
    finally:
        stack.down(settings)
