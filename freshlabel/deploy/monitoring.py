"""Production monitoring from `Settings`: scrape targets, alert rules and a Grafana dashboard.

The guarantee: every alert and every dashboard panel names only metrics the platform's own
workers export (the sink's `streams/sink_metrics.py`, the labeler's
`serving/labeler/metrics.py`) or that Prometheus adds to every scrape (`up`), and each
threshold comes from `settings.monitoring`; tests/test_deploy_monitoring.py parses every
expression and checks each name against the live `/metrics` of a real sink and labeler.

How the pieces meet (the contract with the Deployments freshlabel/deploy/render.py writes):
- each worker pod carries `selector_labels(app)` and names its metrics container port
  `METRICS_PORT` (the sink and labeler serve /metrics, /healthz and /readyz there; Triton
  serves its own metrics on it);
- the sink and labeler get a headless metrics `Service` here that publishes not-ready pods
  too, so a worker that is failing its readiness probe is still scraped (an Endpoints list
  drops not-ready pods, and with them the metrics that say why);
- one `ServiceMonitor` per app scrapes the Services labelled `selector_labels(app)`, with
  the app's name as the Prometheus `job`, which the worker-down alerts select on.
"""

from __future__ import annotations

from typing import Any

from infra.config import Settings

PART_OF = "freshlabel"
NAME_LABEL = "app.kubernetes.io/name"
PART_OF_LABEL = "app.kubernetes.io/part-of"
# The name of the container port (and Service port) that serves metrics.
METRICS_PORT = "metrics"
SINK = "freshlabel-sink"
LABELER = "freshlabel-labeler"
TRITON = "freshlabel-triton"
# Prometheus `job` of each scrape (the ServiceMonitor's jobLabel is NAME_LABEL).
SCRAPE_JOBS = (SINK, LABELER, TRITON)
DASHBOARD_UID = "freshlabel-platform"


def selector_labels(app: str) -> dict[str, str]:
    """The labels that tie an app's pods, its metrics Service and its ServiceMonitor.

    Args:
        app: One of SCRAPE_JOBS.

    Returns:
        Label name -> value, to put on the pod template and to select by.
    """
    return {NAME_LABEL: app, PART_OF_LABEL: PART_OF}


def _namespace(settings: Settings) -> str:
    return settings.deploy.namespace


def worker_metrics_port(settings: Settings, worker: str) -> int:
    """The metrics port of a sink or labeler pod: its own setting, else `deploy.metrics_port`.

    Args:
        settings: The profile.
        worker: SINK or LABELER.

    Returns:
        The port number (the pod names it METRICS_PORT).
    """
    own = settings.sink.metrics_port if worker == SINK else settings.labeler.metrics_port
    return own or settings.deploy.metrics_port


def _min_replicas(settings: Settings, job: str) -> int:
    d = settings.deploy
    return {
        SINK: d.sink_min_replicas,
        LABELER: d.labeler_min_replicas,
        TRITON: d.triton_min_replicas,
    }[job]


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: 600 -> "10m", 3600 -> "1h", 45 -> "45s"."""
    whole = int(round(seconds))
    if whole and whole % 3600 == 0:
        return f"{whole // 3600}h"
    if whole and whole % 60 == 0:
        return f"{whole // 60}m"
    return f"{whole}s"


def _number(value: float) -> str:
    """A threshold as PromQL writes it (no trailing .0)."""
    return f"{value:g}"


# -- alerts ---------------------------------------------------------------------------------


def alert_rules(settings: Settings) -> list[dict[str, Any]]:
    """The platform's alerting rules, in the Prometheus rule format.

    Args:
        settings: Thresholds come from `settings.monitoring`.

    Returns:
        One dict per rule: alert, expr, for, labels.severity, annotations (summary,
        description, runbook_url pointing at the alert's section of docs/monitoring.md).
    """
    m = settings.monitoring
    window = duration(m.rate_window_s)
    lag_window = duration(m.lag_growth_window_s)
    # The subquery step of the lag trend: a few scrapes, so a missed one does not matter.
    step = duration(max(m.scrape_interval_s * 2, 60))
    lag = "sum by (group, topic) (freshlabel_consumer_lag_records)"
    jobs = "|".join(SCRAPE_JOBS)

    def rule(
        name: str, expr: str, for_s: float, severity: str, summary: str, description: str
    ) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": duration(for_s),
            "labels": {"severity": severity},
            "annotations": {
                "summary": summary,
                "description": description,
                "runbook_url": f"{m.runbook_url}#{name.lower()}",
            },
        }

    rules = [
        rule(
            "FreshlabelFreshnessSLA",
            f"histogram_quantile({_number(m.freshness_quantile)}, sum by (table, le) "
            f"(rate(freshlabel_visible_lag_seconds_bucket[{window}]))) > "
            f"{_number(m.freshness_sla_s)}",
            m.for_s,
            "critical",
            "{{ $labels.table }}: p" + f"{m.freshness_quantile * 100:g}"
            " event time to visible in Iceberg is {{ $value | humanizeDuration }}, over the "
            f"{duration(m.freshness_sla_s)} SLA",
            "Rows reach the table later than the freshness SLA: the sink, the labeler or the "
            "enrichment job upstream of it is behind or stalled.",
        ),
        rule(
            "FreshlabelConsumerLagGrowing",
            f"({lag} > {m.lag_min_records}) and (deriv({lag}[{lag_window}:{step}]) > 0)",
            m.for_s,
            "warning",
            "{{ $labels.group }} on {{ $labels.topic }}: {{ $value }} records behind and "
            f"growing over {lag_window}",
            "Records arrive faster than the consumer group takes them: scale it out (up to "
            "the partition count) or find what slows it.",
        ),
        rule(
            "FreshlabelDeadLetterRate",
            f"sum by (table) (rate(freshlabel_sink_dead_letters_total[{window}])) > "
            f"{_number(m.dlq_rate_per_s)} or "
            f"sum(rate(freshlabel_labeler_dead_letters_total[{window}])) > "
            f"{_number(m.dlq_rate_per_s)}",
            m.for_s,
            "warning",
            "{{ with $labels.table }}sink of {{ . }}{{ else }}labeler{{ end }}: "
            "{{ $value | humanize }} dead letters/s",
            "Records are refused (undecodable, out of range, or refused by the teacher) and "
            "sent to their topic's DLQ faster than "
            f"{_number(m.dlq_rate_per_s)}/s; read the DLQ for the reason.",
        ),
        rule(
            "FreshlabelQuarantineRate",
            f"sum by (table) (rate(freshlabel_sink_quarantined_total[{window}])) > "
            f"{_number(m.quarantine_rate_per_s)}",
            m.for_s,
            "warning",
            "{{ $labels.table }}: {{ $value | humanize }} rows/s quarantined by critical "
            "quality checks",
            "A critical data-quality check fails on many rows; they wait in "
            "<table>_quarantine and the dq.alerts topic names the check.",
        ),
        rule(
            "FreshlabelTeacherErrors",
            f"sum(rate(freshlabel_teacher_errors_total[{window}])) > "
            f"{_number(m.teacher_error_rate_per_s)}",
            m.for_s,
            "critical",
            "labeler: {{ $value | humanize }} failed teacher calls/s",
            "The labeler cannot reach the teacher on Triton, or Triton serves a version "
            "without a name; labeling waits and the labels topic falls behind.",
        ),
        rule(
            "FreshlabelTeacherLatency",
            "histogram_quantile(0.95, sum by (le) "
            f'(rate(freshlabel_teacher_batch_seconds_bucket{{traffic="live"}}[{window}]))) > '
            f"{_number(m.teacher_latency_p95_s)}",
            m.for_s,
            "warning",
            "labeler: p95 live teacher batch call {{ $value | humanizeDuration }}",
            "Live teacher calls are slow: Triton is saturated (queue time) or runs on fewer "
            "GPUs than the load needs (a backfill's own calls wait behind live ones by design "
            "and do not count here).",
        ),
        rule(
            "FreshlabelSinkCommitFailures",
            f"sum by (table) (increase(freshlabel_sink_commit_failures_total[{window}])) > 0",
            0,
            "critical",
            "{{ $labels.table }}: {{ $value | humanize }} Iceberg commits failed",
            "A sink commit raised (catalog or object store unreachable, conflicts past "
            "sink.commit_attempts): the sink restarts from its ledger, nothing is lost, but "
            "nothing new becomes visible until commits succeed.",
        ),
        rule(
            "FreshlabelWorkerDown",
            f'up{{job=~"{jobs}"}} == 0',
            m.down_for_s,
            "critical",
            "{{ $labels.job }} {{ $labels.instance }} does not answer its metrics scrape",
            "The process is gone, wedged or unreachable; Kubernetes restarts it when its "
            "liveness probe fails.",
        ),
        rule(
            "FreshlabelWorkerNotReady",
            "min by (job, instance) (freshlabel_worker_ready) == 0",
            m.for_s,
            "warning",
            "{{ $labels.job }} {{ $labels.instance }} not ready: it holds no assignment or "
            "waits on a dependency",
            "The worker runs but cannot work: a consumer group that does not settle, a broker "
            "that is away, or a teacher outage; GET /readyz on its metrics port says which.",
        ),
    ]
    rules += [
        rule(
            "FreshlabelWorkerAbsent",
            f'absent(up{{job="{job}"}})',
            m.down_for_s,
            "critical",
            f"no {job} target is scraped at all",
            "Every pod of the app is gone, or its ServiceMonitor no longer matches its metrics "
            "Service.",
        )
        for job in SCRAPE_JOBS
        # An app KEDA may scale to zero has no target then, and that is no fault.
        if _min_replicas(settings, job) > 0
    ]
    return rules


# -- manifests ------------------------------------------------------------------------------


def _metrics_service(settings: Settings, app: str) -> dict[str, Any]:
    port = worker_metrics_port(settings, app)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": f"{app}-metrics",
            "namespace": _namespace(settings),
            "labels": selector_labels(app),
        },
        "spec": {
            "clusterIP": "None",
            # Scrape a worker that fails readiness too: its metrics say why.
            "publishNotReadyAddresses": True,
            "selector": selector_labels(app),
            "ports": [
                {"name": METRICS_PORT, "port": port, "targetPort": METRICS_PORT, "protocol": "TCP"}
            ],
        },
    }


def _service_monitor(settings: Settings, app: str) -> dict[str, Any]:
    namespace = _namespace(settings)
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": app, "namespace": namespace, "labels": selector_labels(app)},
        "spec": {
            "jobLabel": NAME_LABEL,
            "selector": {"matchLabels": selector_labels(app)},
            "namespaceSelector": {"matchNames": [namespace]},
            "endpoints": [
                {
                    "port": METRICS_PORT,
                    "path": "/metrics",
                    "interval": duration(settings.monitoring.scrape_interval_s),
                }
            ],
        },
    }


def prometheus_rule(settings: Settings) -> dict[str, Any]:
    """The PrometheusRule holding `alert_rules(settings)`.

    Args:
        settings: Namespace and thresholds.

    Returns:
        A `monitoring.coreos.com/v1` PrometheusRule manifest.
    """
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "freshlabel",
            "namespace": _namespace(settings),
            "labels": {PART_OF_LABEL: PART_OF},
        },
        "spec": {"groups": [{"name": "freshlabel", "rules": alert_rules(settings)}]},
    }


def monitoring_manifests(settings: Settings) -> list[dict[str, Any]]:
    """Metrics Services of the workers, a ServiceMonitor per app and the PrometheusRule.

    Args:
        settings: Namespace, metrics port, scrape interval and alert thresholds.

    Returns:
        Manifest dicts, in apply order.

    """
    manifests = [_metrics_service(settings, app) for app in (SINK, LABELER)]
    manifests += [_service_monitor(settings, app) for app in SCRAPE_JOBS]
    manifests.append(prometheus_rule(settings))
    return manifests


# -- dashboard ------------------------------------------------------------------------------


def _panel(
    title: str, targets: list[tuple[str, str]], unit: str, description: str = ""
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def grafana_dashboard(settings: Settings) -> dict[str, Any]:
    """A Grafana dashboard (JSON model) for the metrics the alerts watch.

    Args:
        settings: Windows and thresholds (drawn as threshold lines where they apply).

    Returns:
        The dashboard JSON model, importable as is (the datasource is a variable).
    """
    m = settings.monitoring
    w = "$__rate_interval"
    q = _number(m.freshness_quantile)
    panels = [
        _panel(
            "Freshness: event time to visible in Iceberg",
            [
                (
                    f"histogram_quantile({q}, sum by (table, le) "
                    f"(rate(freshlabel_visible_lag_seconds_bucket[{w}])))",
                    "{{table}} p" + f"{m.freshness_quantile * 100:g}",
                ),
                (
                    "histogram_quantile(0.5, sum by (table, le) "
                    f"(rate(freshlabel_visible_lag_seconds_bucket[{w}])))",
                    "{{table}} p50",
                ),
            ],
            "s",
            f"SLA: {duration(m.freshness_sla_s)} at p{m.freshness_quantile * 100:g}",
        ),
        _panel(
            "Consumer lag (records)",
            [("sum by (group, topic) (freshlabel_consumer_lag_records)", "{{group}} {{topic}}")],
            "short",
            "High watermark minus position, per consumer group, from the workers themselves",
        ),
        _panel(
            "Rows committed to Iceberg",
            [(f"sum by (table) (rate(freshlabel_sink_rows_total[{w}]))", "{{table}}")],
            "rowsps",
        ),
        _panel(
            "Iceberg commits, conflicts and failures",
            [
                (f"sum by (table) (rate(freshlabel_sink_commits_total[{w}]))", "{{table}} commits"),
                (
                    f"sum by (table) (rate(freshlabel_sink_commit_conflicts_total[{w}]))",
                    "{{table}} conflicts (retried)",
                ),
                (
                    f"sum by (table) (rate(freshlabel_sink_commit_failures_total[{w}]))",
                    "{{table}} failures",
                ),
            ],
            "ops",
        ),
        _panel(
            "Dead letters (to the DLQs)",
            [
                (
                    f"sum by (table) (rate(freshlabel_sink_dead_letters_total[{w}]))",
                    "sink {{table}}",
                ),
                (f"sum(rate(freshlabel_labeler_dead_letters_total[{w}]))", "labeler"),
            ],
            "rps",
        ),
        _panel(
            "Quarantined rows",
            [(f"sum by (table) (rate(freshlabel_sink_quarantined_total[{w}]))", "{{table}}")],
            "rowsps",
        ),
        _panel(
            "Labels by teacher version",
            [
                (
                    f"sum by (teacher_version) (rate(freshlabel_labels_total[{w}]))",
                    "{{teacher_version}}",
                )
            ],
            "ops",
        ),
        _panel(
            "Teacher batch latency",
            [
                (
                    "histogram_quantile(0.95, sum by (le, traffic) "
                    f"(rate(freshlabel_teacher_batch_seconds_bucket[{w}])))",
                    "{{traffic}} p95",
                ),
                (
                    "histogram_quantile(0.5, sum by (le, traffic) "
                    f"(rate(freshlabel_teacher_batch_seconds_bucket[{w}])))",
                    "{{traffic}} p50",
                ),
            ],
            "s",
        ),
        _panel(
            "Teacher errors",
            [(f"sum(rate(freshlabel_teacher_errors_total[{w}]))", "failed calls")],
            "ops",
        ),
        _panel(
            "Labeler: event time to label, backlog, dedup",
            [
                (
                    "histogram_quantile(0.95, sum by (le) "
                    f"(rate(freshlabel_label_event_lag_seconds_bucket[{w}])))",
                    "event to label p95 (s)",
                ),
                ("sum(freshlabel_labeler_backlog)", "backlog (rows)"),
                ("avg(freshlabel_dedup_hit_rate)", "dedup hit rate"),
            ],
            "short",
        ),
        _panel(
            "Workers up and ready",
            [
                (f'sum by (job) (up{{job=~"{"|".join(SCRAPE_JOBS)}"}})', "{{job}} up"),
                ("sum by (job) (freshlabel_worker_ready)", "{{job}} ready"),
            ],
            "short",
        ),
    ]
    for i, panel in enumerate(panels):
        panel["id"] = i + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    return {
        "uid": DASHBOARD_UID,
        "title": "freshlabel platform",
        "tags": [PART_OF],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": duration(m.scrape_interval_s),
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }
