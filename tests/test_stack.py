"""`freshlabel up | status | down` on the real broker and catalog."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from infra import stack
from infra.config import Settings
from infra.process import ServiceRecord, is_running
from tests.conftest import freshlabel


def _services(settings: Settings) -> list[ServiceRecord]:
    state = stack.read_state(settings)
    assert state is not None
    return state.services


def _pids(settings: Settings) -> list[int]:
    return [s.pid for s in _services(settings)]


@pytest.mark.stack
def test_up_status_down(settings: Settings) -> None:
    up = freshlabel(settings, "up")
    assert up.returncode == 0, up.stderr
    try:
        state = stack.read_state(settings)
        assert state is not None
        pids = _pids(settings)
        assert all(is_running(s) for s in state.services)
        assert (settings.state_dir / "broker.pid").read_text().strip() == str(pids[0])
        assert (settings.state_dir / "logs" / "broker.log").exists()

        status = freshlabel(settings, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        body = json.loads(status.stdout)
        health = {s["name"]: s["healthy"] for s in body["services"]}
        assert health == {"broker": True, "catalog": True}
        assert body["healthy"] is True

        again = freshlabel(settings, "up")
        assert again.returncode != 0
        assert "already up" in again.stderr
    finally:
        down = freshlabel(settings, "down")
    assert down.returncode == 0, down.stderr
    for pid in pids:
        assert (
            not os.path.exists(f"/proc/{pid}")
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
        )
    assert stack.read_state(settings) is None
    status = freshlabel(settings, "status")
    assert status.returncode == 1 and "DOWN" in status.stdout


@pytest.mark.stack
def test_up_refuses_a_taken_port(settings: Settings) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.broker.port))
        squatter.listen()
        result = freshlabel(settings, "up")
    assert result.returncode != 0
    assert f"broker port {settings.broker.port}" in result.stderr
    assert "FRESHLABEL_BROKER__PORT" in result.stderr
    assert stack.read_state(settings) is None


def test_down_when_not_up_is_harmless(settings: Settings) -> None:
    result = freshlabel(settings, "down")
    assert result.returncode == 0 and "not up" in result.stdout


@pytest.mark.slow
@pytest.mark.stack
def test_durable_broker_keeps_messages_across_restart(settings: Settings) -> None:
    from infra.kafka_io import producer, read_all

    stack.up(settings, durable=True)
    try:
        with producer(settings) as prod:
            prod.send("impressions.dlq", key=b"k", value=b"kept").get(timeout=30)
        broker = next(s for s in _services(settings) if s.name == "broker")
        assert {s.name for s in _services(settings)} == {"object_store", "broker"}
    finally:
        stack.down(settings)
    assert not is_running(broker)
    stack.up(settings, durable=True)
    try:
        values = [r.value for r in read_all(settings, "impressions.dlq", 3.0)]
        assert values == [b"kept"]
    finally:
        stack.down(settings)


def test_free_port_skips_taken_ports_and_stays_out_of_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import random

    from infra import process

    low, high = process.ephemeral_ports()
    busy, free = process.free_port(), process.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", busy))
        taken.listen()
        picks = iter([busy, busy, free])  # a taken pick twice, then a free one
        monkeypatch.setattr(random, "choice", lambda seq: next(picks))
        monkeypatch.setattr(process, "_handed_out", set())
        assert process.free_port() == free
    monkeypatch.undo()
    ports = [process.free_port(offset=10000) for _ in range(50)]
    assert len(set(ports)) == 50  # never handed out twice
    for port in ports:
        for p in (port, port + 10000):
            assert not low <= p <= high and p < 65536


@pytest.mark.slow
@pytest.mark.stack
def test_up_durable_restarts_a_sigkilled_broker_and_keeps_acknowledged_data(
    settings: Settings,
) -> None:
    import signal

    from infra.kafka_io import producer, read_all

    first = freshlabel(settings, "up", "--durable")
    assert first.returncode == 0, first.stderr
    try:
        with producer(settings) as prod:
            prod.send("impressions.dlq", key=b"k", value=b"acknowledged").get(timeout=30)
        before = {s.name: s for s in _services(settings)}
        os.kill(before["broker"].pid, signal.SIGKILL)
        assert freshlabel(settings, "status").returncode == 1

        again = freshlabel(settings, "up", "--durable")
        assert again.returncode == 0, again.stderr
        assert "broker (pid" in again.stderr and "restarting broker" in again.stderr
        after = {s.name: s for s in _services(settings)}
        # Only the dead broker was started again; the object store kept running.
        assert after["object_store"] == before["object_store"]
        assert after["broker"].pid != before["broker"].pid and is_running(after["broker"])
        pid_file = settings.state_dir / "broker.pid"
        assert pid_file.read_text().strip() == str(after["broker"].pid)
        assert freshlabel(settings, "status").returncode == 0
        values = [r.value for r in read_all(settings, "impressions.dlq", 3.0)]
        assert values == [b"acknowledged"]
        # A stack that is fully up is still refused.
        assert "already up" in freshlabel(settings, "up", "--durable").stderr
    finally:
        down = freshlabel(settings, "down")
    assert down.returncode == 0, down.stderr
    assert stack.read_state(settings) is None
