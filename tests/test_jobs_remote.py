"""`freshlabel jobs stop --savepoint` and `deploy --from-savepoint` against a session cluster.

A remote cluster is only its REST endpoint: no PIDs, no FLINK_HOME, no shared filesystem.
A stand-in for the JobManager's REST API (the few calls `stop` makes) shows that the
savepoint goes to `deploy.savepoints_uri` on object storage, that its URI comes back as it
is, that nothing is written under the local state folder, and that a restore from a local
path is refused before anything is submitted.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from infra.config import Settings
from infra.flink_cluster import FlinkError
from streams.enrich import operations

JOB_ID = "a" * 32


class FakeJobManager(BaseHTTPRequestHandler):
    """The REST calls of `operations.stop`, for one RUNNING job that a stop finishes."""

    state = {"job": "RUNNING", "target": None}

    def _send(self, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path == "/overview":
            self._send({"taskmanagers": 1, "slots-total": 2, "slots-available": 1})
        elif self.path == "/jobs/overview":
            job = {"jid": JOB_ID, "name": "freshlabel-enrich", "state": self.state["job"]}
            self._send({"jobs": [{**job, "start-time": 1, "duration": 5}]})
        elif self.path == f"/jobs/{JOB_ID}/savepoints/r1":
            location = f"{self.state['target']}/savepoint-aaaaaa-0123456789ab"
            self._send({"status": {"id": "COMPLETED"}, "operation": {"location": location}})
        elif self.path == f"/jobs/{JOB_ID}":
            self._send({"state": self.state["job"], "vertices": []})
        else:
            self.send_error(404)

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == f"/jobs/{JOB_ID}/stop":
            self.state.update(target=body["targetDirectory"], job="FINISHED")
            self._send({"request-id": "r1"})
        else:
            self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJobManager)
    FakeJobManager.state = {"job": "RUNNING", "target": None}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = Settings(
        state_dir=tmp_path / "state",
        flink={"rest_port": server.server_address[1], "savepoint_timeout_s": 10},
        deploy={"flink_state_uri": "s3://ops-test/enrich"},
    )
    # The stand-in listens on loopback; the code under test must treat it as remote.
    monkeypatch.setattr(operations, "cluster_is_local", lambda s: False)
    try:
        yield settings
    finally:
        server.shutdown()
        server.server_close()


def test_remote_hosts_are_not_local() -> None:
    def local(host: str, enabled: bool = False) -> bool:
        return operations.cluster_is_local(Settings(flink={"host": host, "enabled": enabled}))

    assert local("127.0.0.1") and local("localhost") and local("::1")
    assert local("flink-rest.flink.svc", enabled=True)  # the embedded cluster
    assert not local("flink-session-rest.flink.svc") and not local("10.1.2.3")


def test_stop_writes_the_savepoint_to_object_storage(remote: Settings) -> None:
    path = operations.stop(remote, "enrich", savepoint=True)
    assert FakeJobManager.state["target"] == "s3://ops-test/enrich/savepoints"
    assert path == "s3://ops-test/enrich/savepoints/savepoint-aaaaaa-0123456789ab"
    assert not (remote.state_dir / "flink").exists()


def test_deploy_refuses_a_local_path_for_a_remote_cluster(remote: Settings) -> None:
    FakeJobManager.state["job"] = "FINISHED"
    with pytest.raises(FlinkError, match="pass the URI `jobs stop` printed"):
        operations.deploy(remote, "enrich", from_savepoint="/tmp/savepoint-x")


def test_a_job_on_a_session_cluster_checkpoints_to_object_storage(tmp_path: Path) -> None:
    from streams.enrich.job import flink_config
    from tests.conftest import make_settings

    settings = make_settings(tmp_path / "state")
    settings.flink.enabled, settings.flink.host = False, "flink-session.data.svc"
    remote = flink_config(settings, None, local=False)
    assert remote["execution.checkpointing.dir"] == settings.deploy.checkpoints_uri
    assert remote["execution.checkpointing.savepoint-dir"] == settings.deploy.savepoints_uri
    settings.flink.enabled = True  # the embedded cluster shares this machine's disk
    local = flink_config(settings, None, local=True)
    assert local["execution.checkpointing.dir"].startswith("file://")
