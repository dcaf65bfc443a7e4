"""Shared fixtures: a real embedded stack (Tansu + SQLite catalog) on free ports."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra import stack
from infra.config import Settings
from infra.process import free_port

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def make_settings(state_dir: Path, **overrides: object) -> Settings:
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
    settings: Settings, *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "freshlabel.cli", *args],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "state")


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One real stack per test module, stopped by PID afterwards."""
    settings = make_settings(tmp_path_factory.mktemp("stack") / "state")
    stack.up(settings)
    try:
        yield settings
    finally:
        stack.down(settings)


def shared_data(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"SKIPPED LOUDLY: {path} is absent; this test needs the shared data set")
    return path
