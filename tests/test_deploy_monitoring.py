"""Monitoring of the production deploy: alerts and the dashboard watch only real metrics.

- Every alert expression and dashboard query parses (promql-parser) and names only series
  the platform exports: collected from the live `/metrics` of a real sink process and a real
  labeler process on the embedded stack, plus Prometheus' own `up`; histogram series
  (`_bucket`, `_sum`, `_count`) count for their family.
- The same two processes answer `/healthz` and `/readyz` on their metrics port; the
  endpoint logic is also checked alone, with a fake clock.
- ServiceMonitors and the PrometheusRule validate against their CRD's openAPIV3Schema in
  ../shared/k8s/crds/ and the Services against the Kubernetes schema, strictly, with
  freshlabel/deploy/validate.py (skipped loudly without the CRDs); thresholds follow
  `settings.monitoring`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import promql_parser
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from freshlabel.deploy.monitoring import (
    SCRAPE_JOBS,
    alert_rules,
    grafana_dashboard,
    monitoring_manifests,
    selector_labels,
)
from freshlabel.deploy.validate import CRD_DIR, load_crds, validate_documents
from infra.config import PROJECT_ROOT, Settings
from infra.kafka_io import producer
from infra.process import free_port
from infra.worker_health import ConsumerLag, WorkerHealth
from schemas import EnrichedImpression
from streams.produce import produce_events
from tests.conftest import ROOT, settings_env
from tests.helpers import impression_fields
from tests.test_sink_faults import impressions

# Series Prometheus itself adds to every scrape.
PROMETHEUS_SERIES = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# -- helpers --------------------------------------------------------------------------------


def metric_names(expr: str) -> set[str]:
    """Every metric name an expression selects (parsing it on the way)."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"{expr}: a selector without a metric name"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    # Grafana's interval variable is not PromQL; any range stands in for it.
    return [
        t["expr"].replace("$__rate_interval", "5m")
        for panel in dashboard["panels"]
        for t in panel["targets"]
    ]


def exported_series(text: str) -> set[str]:
    """Series names a scrape of this exposition text stores in Prometheus, from the TYPE
    lines too, so a labelled family with no child yet still counts."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in HISTOGRAM_SUFFIXES)
        else:
            names.add(family.name)
    return names


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(what: str, check: Any, timeout_s: float = 120) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            found = check()
        except OSError:
            found = None  # not listening yet
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def all_exprs(settings: Settings) -> list[str]:
    return [r["expr"] for r in alert_rules(settings)] + dashboard_exprs(grafana_dashboard(settings))


# -- alerts, dashboard and manifests (no processes) ------------------------------------------


def test_alerts_parse_follow_settings_and_link_their_runbook() -> None:
    settings = Settings()
    rules = alert_rules(settings)
    needed = {
        "FreshlabelFreshnessSLA",
        "FreshlabelConsumerLagGrowing",
        "FreshlabelDeadLetterRate",
        "FreshlabelQuarantineRate",
        "FreshlabelTeacherErrors",
        "FreshlabelTeacherLatency",
        "FreshlabelSinkCommitFailures",
        "FreshlabelWorkerDown",
    }
    assert needed <= {r["alert"] for r in rules}
    doc = (PROJECT_ROOT / "docs" / "monitoring.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", doc, flags=re.M)
    }
    for rule in rules:
        assert metric_names(rule["expr"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]
        link = rule["annotations"]["runbook_url"]
        assert link.startswith("docs/monitoring.md#")
        assert link.split("#", 1)[1] in anchors, f"{rule['alert']}: no section in monitoring.md"
    for expr in dashboard_exprs(grafana_dashboard(settings)):
        assert metric_names(expr), expr

    # Thresholds come from settings.monitoring, nothing else changes.
    tuned = Settings(monitoring={"freshness_sla_s": 1234, "teacher_latency_p95_s": 7.5})
    changed = {
        a["alert"]: b["expr"] for a, b in zip(rules, alert_rules(tuned), strict=True) if a != b
    }
    assert set(changed) == {"FreshlabelFreshnessSLA", "FreshlabelTeacherLatency"}
    assert changed["FreshlabelFreshnessSLA"].endswith("> 1234")
    assert changed["FreshlabelTeacherLatency"].endswith("> 7.5")
    # An app that KEDA may scale to zero gets no absent() alert.
    scalable = Settings(deploy={"labeler_min_replicas": 0})
    absent = [r["expr"] for r in alert_rules(scalable) if r["alert"] == "FreshlabelWorkerAbsent"]
    assert len(absent) == len(SCRAPE_JOBS) - 1 and not any("labeler" in e for e in absent)


def test_manifests_validate_against_their_schemas(tmp_path: Path) -> None:
    monitoring_crds = sorted(CRD_DIR.glob("*.monitoring.coreos.com.y*ml"))
    if not monitoring_crds:
        pytest.skip(f"SKIPPED LOUDLY: no prometheus-operator CRDs in {CRD_DIR} (CI has them)")
    # Only the prometheus-operator CRDs: the Flink operator's alone takes seconds to load.
    for crd in monitoring_crds:
        (tmp_path / crd.name).symlink_to(crd)
    settings = Settings()
    manifests = monitoring_manifests(settings)
    kinds = [m["kind"] for m in manifests]
    assert kinds.count("ServiceMonitor") == len(SCRAPE_JOBS) and "PrometheusRule" in kinds
    # Strict, as freshlabel/deploy/validate.py checks every rendered folder: unknown fields fail.
    docs = [("monitoring.yaml", m) for m in manifests]
    assert validate_documents(docs, load_crds(tmp_path)) == []
    assert {m["metadata"]["namespace"] for m in manifests} == {settings.deploy.namespace}
    # Each ServiceMonitor selects the Services of its app; the Services select its pods,
    # not-ready ones included, on the port the deploy settings give the workers.
    services = {m["metadata"]["name"]: m for m in manifests if m["kind"] == "Service"}
    for monitor in (m for m in manifests if m["kind"] == "ServiceMonitor"):
        app = monitor["metadata"]["name"]
        assert monitor["spec"]["selector"]["matchLabels"] == selector_labels(app)
    for service in services.values():
        assert service["spec"]["publishNotReadyAddresses"] is True
        assert service["spec"]["ports"][0]["port"] == settings.deploy.metrics_port
    rules = next(m for m in manifests if m["kind"] == "PrometheusRule")
    assert rules["spec"]["groups"][0]["rules"] == alert_rules(settings)
    dashboard = grafana_dashboard(settings)
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


# -- health endpoints alone -----------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_health_endpoints_answer_liveness_and_readiness() -> None:
    clock = FakeClock()
    health = WorkerHealth(CollectorRegistry(), liveness_timeout_s=30, clock=clock)
    port = free_port()
    server = health.serve("127.0.0.1", port)
    try:
        assert get(port, "/healthz")[0] == 200
        status, body = get(port, "/readyz")
        assert (status, body.strip()) == (503, "unavailable: starting")
        health.ready(True, "holding partitions [0, 1] of labels")
        assert get(port, "/readyz") == (200, "ok: holding partitions [0, 1] of labels\n")
        assert "freshlabel_worker_ready 1.0" in get(port, "/metrics")[1]
        health.ready(False, "broker localhost:1 unreachable\n(KafkaConnectionError)")
        status, body = get(port, "/readyz")
        assert status == 503 and body.count("\n") == 1 and "unreachable" in body
        clock.now += 31  # the loop stopped turning
        status, body = get(port, "/healthz")
        assert status == 503 and "liveness_timeout_s" in body
        health.tick()
        assert get(port, "/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


class FakeTP:
    def __init__(self, topic: str, partition: int) -> None:
        self.topic, self.partition = topic, partition


class FakeConsumer:
    def __init__(self, held: dict[int, tuple[int | None, int]]) -> None:
        self.held = held  # partition -> (high watermark, position)

    def assignment(self) -> set[Any]:
        return {FakeTP("t", p) for p in self.held}

    def highwater(self, tp: FakeTP) -> int | None:
        return self.held[tp.partition][0]

    def position(self, tp: FakeTP, timeout_ms: int | None = None) -> int:
        return self.held[tp.partition][1]


def test_consumer_lag_is_per_partition_and_drops_revoked_ones() -> None:
    registry = CollectorRegistry()
    lag = ConsumerLag(registry)
    assert lag.observe(FakeConsumer({0: (100, 40), 1: (7, 7), 2: (None, 0)}), "g") == 60
    value = registry.get_sample_value
    assert value("freshlabel_consumer_lag_records", {"group": "g", "topic": "t", "partition": "0"})
    assert (
        value("freshlabel_consumer_lag_records", {"group": "g", "topic": "t", "partition": "2"})
        is None
    )
    assert lag.observe(FakeConsumer({1: (9, 7)}), "g", force=True) == 2  # 0 revoked
    assert (
        value("freshlabel_consumer_lag_records", {"group": "g", "topic": "t", "partition": "0"})
        is None
    )


def test_sink_metrics_count_commit_failures_apart_from_conflicts(tmp_path: Path) -> None:
    from pyiceberg.exceptions import CommitFailedException

    from streams.sink_metrics import SinkMetrics

    metrics = SinkMetrics(Settings(state_dir=tmp_path), "t", None)
    metrics.conflicts.inc()
    metrics.commit_failed(CommitFailedException("conflicts past sink.commit_attempts"))
    value = metrics.registry.get_sample_value
    failures = {"table": "t", "error": "CommitFailedException"}
    assert value("freshlabel_sink_commit_failures_total", failures) == 1
    assert value("freshlabel_sink_commit_conflicts_total", {"table": "t"}) == 1
    metrics.write_status(stopped=True)


# -- a live sink and labeler ----------------------------------------------------------------


def _start(settings: Settings, env_extra: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    env = {**settings_env(settings), **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "freshlabel.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


@pytest.fixture(scope="module")
def live_workers(running_stack: Settings) -> Iterator[dict[str, int]]:
    """A sink (static, on `impressions`) and a labeler, each with a metrics port."""
    settings = running_stack
    with producer(settings) as prod:
        produce_events(prod, impressions(40, "monitoring"))
    ports = {"sink": free_port(), "labeler": free_port()}
    procs = [
        _start(
            settings,
            {"FRESHLABEL_SINK__METRICS_PORT": str(ports["sink"])},
            *("sink", "run", "--topic", "impressions", "--table", "monitoring_impressions"),
            *("--batch-seconds", "1", "--assignment", "static"),
        ),
        _start(
            settings,
            {
                "FRESHLABEL_LABELER__METRICS_PORT": str(ports["labeler"]),
                # No Triton here: the first row it takes starts a teacher outage.
                "FRESHLABEL_TRITON__GRPC_PORT": str(free_port()),
                "FRESHLABEL_TRITON__RETRIES": "0",
            },
            "label",
            "run",
        ),
    ]
    try:
        for name, port in ports.items():
            wait_for(f"{name} /readyz", lambda port=port: get(port, "/readyz")[0] == 200)
        yield ports
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def _series_of(port: int) -> set[str]:
    return exported_series(get(port, "/metrics")[1])


def test_alerts_and_dashboard_name_only_metrics_live_workers_export(
    live_workers: dict[str, int],
) -> None:
    # Wait until the sink committed and measured its lag, so the check sees real samples.
    sink_text = wait_for(
        "the sink's first commit and lag sample",
        lambda: (
            text
            if 'freshlabel_consumer_lag_records{group="freshlabel-sink-monitoring_impressions"'
            in (text := get(live_workers["sink"], "/metrics")[1])
            and re.search(r"^freshlabel_sink_commits_total\{[^}]*\} [1-9]", text, re.M)
            else None
        ),
    )
    exported = exported_series(sink_text) | _series_of(live_workers["labeler"])
    assert "freshlabel_sink_commit_failures_total" in exported  # before any failure, too
    settings = Settings()
    used: dict[str, set[str]] = {}
    for expr in all_exprs(settings):
        for name in metric_names(expr):
            used.setdefault(name, set()).add(expr)
    unknown = {n: e for n, e in used.items() if n not in exported | PROMETHEUS_SERIES}
    assert not unknown, f"alerts/dashboard name metrics nobody exports: {unknown}"
    # Every family the alerts need is there, each worker exporting its own.
    assert {"freshlabel_consumer_lag_records", "freshlabel_worker_ready"} <= (
        _series_of(live_workers["labeler"]) & exported_series(sink_text)
    )


def test_live_workers_answer_health_and_readiness(live_workers: dict[str, int]) -> None:
    for name, port in live_workers.items():
        assert get(port, "/healthz")[0] == 200, name
        status, body = get(port, "/readyz")
        assert status == 200 and body.startswith("ok: holding partitions"), (name, body)


def test_a_labeler_waiting_for_the_teacher_is_alive_but_not_ready(
    running_stack: Settings, live_workers: dict[str, int]
) -> None:
    port = live_workers["labeler"]
    row = EnrichedImpression(
        **impression_fields(
            "monitoring-outage-1",
            datetime.now(UTC),  # inside decode.max_age_days, whenever this runs
            query="oak desk",
            pin_id="pin-1",
            title="modern oak desk",
        )
    )
    with producer(running_stack) as prod:
        produce_events(prod, [row])
    status, body = wait_for(
        "the labeler to report the teacher outage",
        lambda: (answer := get(port, "/readyz"))[0] == 503 and answer,
    )
    assert "teacher unavailable" in body and body.count("\n") == 1, body
    assert get(port, "/healthz")[0] == 200  # waiting on the teacher is not a wedged loop
    errors = wait_for(
        "the teacher error counter",
        lambda: exported_value(get(port, "/metrics")[1], "freshlabel_teacher_errors_total"),
    )
    assert errors >= 1


def exported_value(text: str, name: str) -> float | None:
    """The value of an unlabelled sample in an exposition text (None: absent or zero)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.value:
                return sample.value
    return None
