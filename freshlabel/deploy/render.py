"""Kubernetes manifests for the production platform, from `Settings` alone.

The guarantee: every number the platform itself uses (topic partitions and retention, batch
sizes, windows, ports, consumer groups, the Flink job's configuration, the teacher version)
is read from the same `Settings` the embedded stack runs on, through the same functions
(`streams.enrich.job.job_config`, `infra.flink_cluster.cluster_tuning`,
`Settings.topic_config`, `streams.iceberg_sink.sink_group_id`), so development and
production cannot drift; what only a cluster needs comes from `settings.deploy`. Secrets
never enter a manifest: the profile goes into a ConfigMap (render refuses one that holds a
secret) and every pod takes the Secret `deploy.secret_name` as `FRESHLABEL_*` environment.

Components (one file each, see `render`): the settings ConfigMap, Strimzi KafkaTopics, the
enrichment job as a Flink operator FlinkDeployment (application mode, last-state upgrades,
state on object storage, autoscaler), one Deployment + KEDA ScaledObject per sink table and
for the labeler (scaled on consumer-group lag, never past the partition count), Triton
(GPU Deployment, Service, KEDA on queue time), and monitoring (freshlabel/deploy/monitoring.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from freshlabel.deploy.monitoring import (
    LABELER,
    METRICS_PORT,
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    SINK,
    TRITON,
    grafana_dashboard,
    monitoring_manifests,
    selector_labels,
    worker_metrics_port,
)
from infra.config import PROJECT_ROOT, ComponentResources, Settings
from infra.flink_cluster import cluster_tuning
from infra.triton import server_args
from schemas.enriched_impression import EnrichedImpression
from schemas.topics import BY_TOPIC
from streams.enrich import job as enrich_job
from streams.enrich.sql import input_topics
from streams.enrich.sql import render as render_job_sql
from streams.iceberg_sink import sink_group_id

# Where the images (infra/images/) hold the repository, and the job's entry file in it.
IMAGE_REPO_DIR = "/opt/freshlabel"
JOB_ENTRY = Path(enrich_job.__file__).resolve().relative_to(PROJECT_ROOT).as_posix()
PYTHON_DRIVER = "org.apache.flink.client.python.PythonDriver"
FLINK_LOCK = PROJECT_ROOT / "requirements" / "flink.lock"
# A worker's metrics server listens on the pod's address (probes and scrapes come from
# outside the container); `sink.metrics_host` stays loopback for the embedded stack.
POD_BIND_ADDRESS = "0.0.0.0"  # noqa: S104
CONFIG_FILE = "freshlabel.yaml"
CONFIG_MAP = "freshlabel-config"
CONFIG_VOLUME = "freshlabel-config"
STATE_VOLUME = "freshlabel-state"
# Pod annotation that changes when what the pod reads changes, so Kubernetes rolls it.
CONFIG_HASH = "freshlabel.io/config-sha256"
JOB_HASH = "freshlabel.io/job-sha256"
TEACHER_LABEL = "freshlabel.io/teacher-version"
INSTANCE_LABEL = "app.kubernetes.io/instance"
# The main container of Flink operator pod templates is recognised by this name.
FLINK_MAIN_CONTAINER = "flink-main-container"
# Kafka SASL mechanisms -> the KEDA kafka scaler's `sasl` values.
_KEDA_SASL = {
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
    "OAUTHBEARER": "oauthbearer",
    "GSSAPI": "gssapi",
}
# Keys whose value is a secret (a Slack webhook URL is one); a profile holding one is
# refused (use the Secret).
_SECRET_KEY = re.compile(
    r"password|secret|credential|token|webhook_url|private[-_.]?key|access[-_.]?key", re.I
)


class RenderError(ValueError):
    """Settings that cannot become manifests; the message names the setting and the fix."""


# -- helpers -----------------------------------------------------------------------------


def k8s_name(value: str) -> str:
    """`value` as a Kubernetes object name (DNS-1123: lowercase, digits, '-', '.')."""
    name = re.sub(r"[^a-z0-9.-]+", "-", value.lower()).strip("-.")
    if not name or len(name) > 253:
        raise RenderError(f"{value!r} cannot be a Kubernetes name; rename it")
    return name


def flink_version() -> str:
    """The Flink release the job runs on: the apache-flink pin of requirements/flink.lock
    (the one `make setup` installs and the Flink image is built from).

    Returns:
        The version, e.g. "2.3.0".

    Raises:
        RenderError: the lock has no apache-flink pin.
    """
    found = re.search(r"^apache-flink==([0-9][^\s;]*)", FLINK_LOCK.read_text(), re.M)
    if not found:
        raise RenderError(f"{FLINK_LOCK} pins no apache-flink; run `make lock`")
    return found.group(1)


def _operator_flink_version(version: str) -> str:
    major, minor = version.split(".")[:2]
    return f"v{major}_{minor}"


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _stringify(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _cpu(cores: float) -> str:
    return f"{round(cores * 1000)}m"


def _namespace(settings: Settings) -> str:
    return settings.deploy.namespace


def _metadata(settings: Settings, name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": _namespace(settings), "labels": dict(labels)}


def _find_secrets(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        found: list[str] = []
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if _SECRET_KEY.search(str(key)) and item not in (None, "", {}, []):
                found.append(where)
            else:
                found += _find_secrets(item, where)
        return found
    if isinstance(value, list):
        return [hit for i, item in enumerate(value) for hit in _find_secrets(item, f"{path}[{i}]")]
    return []


def profile_config(settings: Settings) -> dict[str, Any]:
    """The settings the profile set, as the ConfigMap's YAML holds them.

    Only explicitly set values (not defaults, not `deploy`, which no pod reads, and not the
    state and tools folders when the validator merely resolved their defaults).

    Args:
        settings: loaded from the profile (the CLI clears FRESHLABEL_* first).

    Returns:
        The profile as a dict.

    Raises:
        RenderError: a secret is among the values (it belongs in the Secret).
    """
    config = settings.model_dump(mode="json", exclude_unset=True, exclude={"deploy"})
    defaults = Settings.model_fields
    for folder in ("state_dir", "tools_dir"):
        default = defaults[folder].default
        if default is not None and config.get(folder) == str(Path(default).resolve()):
            config.pop(folder)
    secrets = _find_secrets(config)
    if secrets:
        raise RenderError(
            f"the profile holds secrets at {', '.join(secrets)}; remove them and put them in "
            f"the Secret {settings.deploy.secret_name} as FRESHLABEL_* variables "
            "(e.g. FRESHLABEL_BROKER__CLIENT_OPTIONS__SASL_PLAIN_PASSWORD)"
        )
    return config


def _config_text(settings: Settings) -> str:
    header = (
        "# Rendered by `freshlabel deploy render` from the profile; secrets come from the "
        f"Secret {settings.deploy.secret_name}.\n"
    )
    return header + yaml.safe_dump(profile_config(settings), sort_keys=True)


def _config_path(settings: Settings) -> str:
    return f"{settings.deploy.config_mount_dir.rstrip('/')}/{CONFIG_FILE}"


def _config_volume() -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "configMap": {"name": CONFIG_MAP}}


def _config_mount(settings: Settings) -> dict[str, Any]:
    return {"name": CONFIG_VOLUME, "mountPath": settings.deploy.config_mount_dir, "readOnly": True}


def _env(pairs: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def _secret_env(settings: Settings) -> list[dict[str, Any]]:
    return [{"secretRef": {"name": settings.deploy.secret_name}}]


# -- settings ConfigMap ------------------------------------------------------------------


def config_map(settings: Settings) -> dict[str, Any]:
    """The ConfigMap holding the profile every pod reads through FRESHLABEL_CONFIG."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(settings, CONFIG_MAP, {PART_OF_LABEL: PART_OF}),
        "data": {CONFIG_FILE: _config_text(settings)},
    }


# -- Kafka topics --------------------------------------------------------------------------


def kafka_topics(settings: Settings) -> list[dict[str, Any]]:
    """A Strimzi KafkaTopic for every topic the platform uses (`Settings.platform_topics`),
    with its partitions, replication and `Settings.topic_config`."""
    d = settings.deploy
    manifests = []
    for topic in settings.platform_topics:
        manifests.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": k8s_name(topic),
                    "namespace": d.kafka_namespace or d.namespace,
                    "labels": {
                        "strimzi.io/cluster": d.kafka_cluster,
                        PART_OF_LABEL: PART_OF,
                    },
                },
                "spec": {
                    "topicName": topic,
                    "partitions": settings.topics.partitions_for(topic),
                    "replicas": settings.topics.replication_factor,
                    "config": settings.topic_config(topic),
                },
            }
        )
    return manifests


# -- Flink ---------------------------------------------------------------------------------


def flink_configuration(settings: Settings) -> dict[str, str]:
    """The FlinkDeployment's flinkConfiguration: the job's own configuration and the
    cluster tuning the embedded cluster uses, then state on object storage, Kubernetes HA
    and the autoscaler.

    Args:
        settings: flink.* (shared with the embedded job) and deploy.*.

    Returns:
        Flink option -> value (strings, as the operator takes them).
    """
    d = settings.deploy
    max_parallelism = d.autoscaler_max_parallelism or max(
        settings.topics.partitions_for(t) for t in input_topics(settings)
    )
    config: dict[str, Any] = {
        **cluster_tuning(settings),
        **enrich_job.job_config(settings),
        "execution.checkpointing.dir": d.checkpoints_uri,
        "execution.checkpointing.savepoint-dir": d.savepoints_uri,
        "high-availability.type": "kubernetes",
        "high-availability.storageDir": d.ha_uri,
        "job.autoscaler.enabled": d.autoscaler_enabled,
        "job.autoscaler.target.utilization": d.autoscaler_target_utilization,
        "job.autoscaler.metrics.window": f"{d.autoscaler_metrics_window_s} s",
        "job.autoscaler.stabilization.interval": f"{d.autoscaler_stabilization_s} s",
        "job.autoscaler.vertex.max-parallelism": max_parallelism,
        # The embedded cluster has one TaskManager holding every slot; here the operator
        # starts parallelism / task_slots TaskManagers (and the autoscaler changes that).
        "taskmanager.numberOfTaskSlots": settings.flink.task_slots,
    }
    return {key: _stringify(value) for key, value in sorted(config.items())}


def job_fingerprint(settings: Settings) -> str:
    """SHA-256 of what the running job depends on: its SQL and its configuration. A pod
    annotation with it makes the operator upgrade the job (with state) exactly when it
    changes, not on every unrelated settings change."""
    canonical = settings.model_copy(deep=True)
    # The order of client options in a profile is no change to the job.
    canonical.broker.client_options = dict(sorted(settings.broker.client_options.items()))
    sql = render_job_sql(canonical).script()
    return _sha256({"sql": sql, "config": flink_configuration(settings)})


def flink_deployment(settings: Settings) -> dict[str, Any]:
    """The enrichment job on the Flink Kubernetes operator (application mode).

    Args:
        settings: flink.*, topics.*, deploy.*.

    Returns:
        A `flink.apache.org/v1beta1` FlinkDeployment.
    """
    d = settings.deploy
    version = flink_version()
    labels = {NAME_LABEL: k8s_name(settings.flink.job_name), PART_OF_LABEL: PART_OF}
    job: dict[str, Any] = {
        "jarURI": f"local:///opt/flink/opt/flink-python-{version}.jar",
        "entryClass": PYTHON_DRIVER,
        "args": ["-py", f"{IMAGE_REPO_DIR}/{JOB_ENTRY}", "--application"],
        "parallelism": settings.flink.parallelism,
        "upgradeMode": "last-state",
        "state": "running",
    }
    if d.flink_initial_savepoint:
        job["initialSavepointPath"] = d.flink_initial_savepoint
    if d.flink_savepoint_nonce is not None:
        job["savepointTriggerNonce"] = d.flink_savepoint_nonce
    task_manager: dict[str, Any] = {
        "resource": {
            "cpu": d.taskmanager_resources.cpu,
            "memory": d.taskmanager_resources.memory,
        }
    }
    if d.taskmanager_replicas:
        task_manager["replicas"] = d.taskmanager_replicas
    container = {
        "name": FLINK_MAIN_CONTAINER,
        "env": _env(
            {
                "FRESHLABEL_CONFIG": _config_path(settings),
                # -py runs the file as a script: the repository root must be importable.
                "PYTHONPATH": IMAGE_REPO_DIR,
                "ENABLE_BUILT_IN_PLUGINS": f"flink-s3-fs-presto-{version}.jar",
            }
        ),
        "envFrom": _secret_env(settings),
        "volumeMounts": [_config_mount(settings)],
    }
    return {
        "apiVersion": "flink.apache.org/v1beta1",
        "kind": "FlinkDeployment",
        "metadata": _metadata(settings, k8s_name(settings.flink.job_name), labels),
        "spec": {
            "image": d.image(d.flink_image),
            "imagePullPolicy": d.image_pull_policy,
            "flinkVersion": _operator_flink_version(version),
            "serviceAccount": d.flink_service_account,
            "mode": "native",
            "flinkConfiguration": flink_configuration(settings),
            "podTemplate": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "labels": labels,
                    "annotations": {JOB_HASH: job_fingerprint(settings)},
                },
                "spec": {"containers": [container], "volumes": [_config_volume()]},
            },
            "jobManager": {
                "replicas": 1,
                "resource": {
                    "cpu": d.jobmanager_resources.cpu,
                    "memory": d.jobmanager_resources.memory,
                },
            },
            "taskManager": task_manager,
            "job": job,
        },
    }


# -- workers (sinks, labeler) ----------------------------------------------------------------


def _kafka_trigger(settings: Settings, group: str, topic: str, threshold: int) -> dict[str, Any]:
    """A KEDA kafka trigger on `group`'s lag on `topic`; TLS/SASL follow the broker's
    client options, credentials come from the TriggerAuthentication `deploy.keda_kafka_auth`."""
    options = settings.broker.client_options
    metadata = {
        "bootstrapServers": settings.broker.bootstrap,
        "consumerGroup": group,
        "topic": topic,
        "lagThreshold": str(threshold),
        # A new group has no committed offset yet: count its whole backlog as lag.
        "offsetResetPolicy": "earliest",
        # Replicas past the partition count would sit idle.
        "allowIdleConsumers": "false",
    }
    protocol = str(options.get("security_protocol", "PLAINTEXT")).upper()
    if protocol in ("SSL", "SASL_SSL"):
        metadata["tls"] = "enable"
    if protocol.startswith("SASL"):
        mechanism = str(options.get("sasl_mechanism", "PLAIN")).upper()
        if mechanism not in _KEDA_SASL:
            raise RenderError(
                f"broker.client_options.sasl_mechanism={mechanism} has no KEDA kafka scaler "
                f"equivalent; use one of {', '.join(_KEDA_SASL)}"
            )
        metadata["sasl"] = _KEDA_SASL[mechanism]
    trigger: dict[str, Any] = {"type": "kafka", "metadata": metadata}
    if settings.deploy.keda_kafka_auth:
        trigger["authenticationRef"] = {"name": settings.deploy.keda_kafka_auth}
    return trigger


def _scaled_object(
    settings: Settings,
    name: str,
    labels: dict[str, str],
    min_replicas: int,
    max_replicas: int,
    trigger: dict[str, Any],
) -> dict[str, Any]:
    d = settings.deploy
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _metadata(settings, name, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicaCount": min(min_replicas, max_replicas),
            "maxReplicaCount": max_replicas,
            "pollingInterval": d.keda_polling_s,
            "cooldownPeriod": d.keda_cooldown_s,
            "triggers": [trigger],
        },
    }


def _worker_deployment(
    settings: Settings,
    name: str,
    app: str,
    args: list[str],
    env: dict[str, str],
    port: int,
    cpu: float,
    memory: str,
) -> dict[str, Any]:
    d = settings.deploy
    labels = {**selector_labels(app), INSTANCE_LABEL: name}
    period = d.probe_period_s
    probe = {"port": METRICS_PORT}
    container = {
        "name": "worker",
        "image": d.image(d.platform_image),
        "imagePullPolicy": d.image_pull_policy,
        "args": args,
        "env": _env({"FRESHLABEL_CONFIG": _config_path(settings), **env}),
        "envFrom": _secret_env(settings),
        "ports": [{"name": METRICS_PORT, "containerPort": port, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", **probe},
            "periodSeconds": period,
            "failureThreshold": max(1, math.ceil(d.liveness_failure_s / period)),
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", **probe},
            "periodSeconds": period,
            "failureThreshold": 3,
        },
        "resources": {
            "requests": {"cpu": _cpu(cpu), "memory": memory},
            "limits": {"memory": memory},
        },
        "volumeMounts": [
            _config_mount(settings),
            {"name": STATE_VOLUME, "mountPath": str(settings.state_dir)},
        ],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(settings, name, labels),
        "spec": {
            # KEDA owns the replica count.
            "selector": {"matchLabels": {INSTANCE_LABEL: name, **selector_labels(app)}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {CONFIG_HASH: _sha256(_config_text(settings))},
                },
                "spec": {
                    "terminationGracePeriodSeconds": d.termination_grace_s,
                    "containers": [container],
                    "volumes": [_config_volume(), {"name": STATE_VOLUME, "emptyDir": {}}],
                },
            },
        },
    }


def sink_name(topic: str) -> str:
    """The Deployment (and ScaledObject) name of the sink of `topic`."""
    return k8s_name(f"freshlabel-sink-{BY_TOPIC[topic].table}")


def sink_manifests(settings: Settings, topic: str) -> list[dict[str, Any]]:
    """Deployment + ScaledObject of the sink committing `topic` to its table.

    Raises:
        RenderError: `topic` has no event model (so no table).
    """
    if topic not in BY_TOPIC:
        raise RenderError(
            f"deploy.sink_topics names {topic!r}, which has no table; known: "
            + ", ".join(sorted(BY_TOPIC))
        )
    d = settings.deploy
    table = BY_TOPIC[topic].table
    return _scaled_worker(
        settings,
        sink_name(topic),
        SINK,
        ["sink", "run", "--topic", topic, "--table", table],
        "SINK",
        d.sink_resources,
        (sink_group_id(table), topic, d.sink_lag_threshold),
        (d.sink_min_replicas, d.sink_max_replicas),
    )


def labeler_manifests(settings: Settings) -> list[dict[str, Any]]:
    """Deployment + ScaledObject of the labeler (impressions.enriched -> labels)."""
    d = settings.deploy
    return _scaled_worker(
        settings,
        LABELER,
        LABELER,
        ["label", "run"],
        "LABELER",
        d.labeler_resources,
        (settings.labeler.group_id, EnrichedImpression.topic, d.labeler_lag_threshold),
        (d.labeler_min_replicas, d.labeler_max_replicas),
    )


def _scaled_worker(
    settings: Settings,
    name: str,
    app: str,
    args: list[str],
    settings_section: str,
    resources: ComponentResources,
    lag: tuple[str, str, int],
    replicas: tuple[int, int | None],
) -> list[dict[str, Any]]:
    """A worker Deployment and its KEDA ScaledObject on the lag of (group, topic): never
    more replicas than the topic has partitions (an extra member would sit idle)."""
    group, topic, threshold = lag
    min_replicas, max_bound = replicas
    port = worker_metrics_port(settings, app)
    deployment = _worker_deployment(
        settings,
        name,
        app,
        args,
        {
            f"FRESHLABEL_{settings_section}__METRICS_HOST": POD_BIND_ADDRESS,
            f"FRESHLABEL_{settings_section}__METRICS_PORT": str(port),
        },
        port,
        resources.cpu,
        resources.memory,
    )
    partitions = settings.topics.partitions_for(topic)
    scaled = _scaled_object(
        settings,
        name,
        deployment["metadata"]["labels"],
        min_replicas,
        min(max_bound or partitions, partitions),
        _kafka_trigger(settings, group, topic, threshold),
    )
    return [deployment, scaled]


# -- Triton --------------------------------------------------------------------------------


def triton_args(settings: Settings) -> list[str]:
    """tritonserver's arguments: the ones the embedded server uses too
    (`infra.triton.server_args`) with the teacher version's repository on object storage,
    and strict readiness: not ready until every model loaded, so the readiness probe means
    "can label"."""
    return [
        *server_args(settings, settings.deploy.triton_repository),
        "--strict-readiness=true",
    ]


def _check_triton_url(settings: Settings) -> None:
    url = settings.triton.url
    service = f"{TRITON}.{_namespace(settings)}.svc"
    wanted = f"{service}:{settings.triton.grpc_port}"
    if url is None:
        raise RenderError(
            f"triton.url is unset; the labeler reaches the Triton Service at {wanted}"
        )
    host, _, port = url.rpartition(":")
    if port != str(settings.triton.grpc_port) or not (host == TRITON or host.startswith(service)):
        raise RenderError(
            f"triton.url={url} is not the rendered Triton Service; set it to {wanted} "
            "(the port is triton.grpc_port)"
        )


def triton_manifests(settings: Settings) -> list[dict[str, Any]]:
    """Triton's Deployment (GPUs, health probes, startup long enough for model load), its
    Service (http, grpc, metrics) and a ScaledObject on the average queue time per request.

    Raises:
        RenderError: triton.url does not point at the rendered Service.
    """
    _check_triton_url(settings)
    d, t = settings.deploy, settings.triton
    labels = {**selector_labels(TRITON), TEACHER_LABEL: k8s_name(d.teacher_version)}
    period = d.probe_period_s
    ports = [
        {"name": "http", "containerPort": t.http_port, "protocol": "TCP"},
        {"name": "grpc", "containerPort": t.grpc_port, "protocol": "TCP"},
        {"name": METRICS_PORT, "containerPort": t.metrics_port, "protocol": "TCP"},
    ]
    resources: dict[str, Any] = {
        "requests": {"cpu": _cpu(d.triton_resources.cpu), "memory": d.triton_resources.memory},
        "limits": {"memory": d.triton_resources.memory},
    }
    if d.triton_gpus:
        resources["requests"]["nvidia.com/gpu"] = str(d.triton_gpus)
        resources["limits"]["nvidia.com/gpu"] = str(d.triton_gpus)
    container = {
        "name": "tritonserver",
        "image": d.image(d.triton_image),
        "imagePullPolicy": d.image_pull_policy,
        "args": triton_args(settings),
        "envFrom": _secret_env(settings),
        "ports": ports,
        "startupProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": period,
            "failureThreshold": max(1, math.ceil(d.triton_startup_timeout_s / period)),
        },
        "livenessProbe": {
            "httpGet": {"path": "/v2/health/live", "port": "http"},
            "periodSeconds": period,
            "failureThreshold": max(1, math.ceil(d.liveness_failure_s / period)),
        },
        "readinessProbe": {
            "httpGet": {"path": "/v2/health/ready", "port": "http"},
            "periodSeconds": period,
            "failureThreshold": 3,
        },
        "resources": resources,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(settings, TRITON, labels),
        "spec": {
            "selector": {"matchLabels": selector_labels(TRITON)},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": int(t.exit_timeout_s) + period,
                    "containers": [container],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(settings, TRITON, selector_labels(TRITON)),
        "spec": {
            "selector": selector_labels(TRITON),
            "ports": [
                {"name": p["name"], "port": p["containerPort"], "targetPort": p["name"]}
                for p in ports
            ],
        },
    }
    window = f"{d.triton_queue_window_s}s"
    match = f'job="{TRITON}",namespace="{_namespace(settings)}",model="{t.model_name}"'
    query = (
        f"sum(rate(nv_inference_queue_duration_us{{{match}}}[{window}])) / "
        f"clamp_min(sum(rate(nv_inference_request_success{{{match}}}[{window}])), 1)"
    )
    trigger = {
        "type": "prometheus",
        # Value: replicas grow with the ratio of the average queue time to the target.
        "metricType": "Value",
        "metadata": {
            "serverAddress": d.prometheus_url,
            "query": query,
            "threshold": f"{d.triton_queue_target_us:g}",
        },
    }
    scaled = _scaled_object(
        settings,
        TRITON,
        selector_labels(TRITON),
        d.triton_min_replicas,
        d.triton_max_replicas,
        trigger,
    )
    return [deployment, service, scaled]


# -- everything ----------------------------------------------------------------------------


def render(settings: Settings) -> dict[str, list[dict[str, Any]]]:
    """Every manifest of the platform, by the file it goes to.

    Args:
        settings: the production profile's settings.

    Returns:
        File name (relative, .yaml) -> manifests in apply order.

    Raises:
        RenderError: settings that cannot be deployed (named in the message).
    """
    files: dict[str, list[dict[str, Any]]] = {
        "config.yaml": [config_map(settings)],
        "topics.yaml": kafka_topics(settings),
        "flink-enrich.yaml": [flink_deployment(settings)],
    }
    for topic in settings.deploy.sink_topics:
        files[f"{sink_name(topic)}.yaml"] = sink_manifests(settings, topic)
    files["labeler.yaml"] = labeler_manifests(settings)
    files["triton.yaml"] = triton_manifests(settings)
    files["monitoring.yaml"] = monitoring_manifests(settings)
    return files


def dashboards(settings: Settings) -> dict[str, dict[str, Any]]:
    """Grafana dashboards by file name (under dashboards/)."""
    return {"freshlabel.json": grafana_dashboard(settings)}


def write(settings: Settings, out: Path) -> list[Path]:
    """Render into `out`: one multi-document YAML file per component and the dashboards.

    Args:
        settings: the profile's settings.
        out: target folder (created; files of the same name are replaced).

    Returns:
        The files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, manifests in render(settings).items():
        path = out / name
        path.write_text(yaml.safe_dump_all(manifests, sort_keys=False))
        written.append(path)
    board_dir = out / "dashboards"
    board_dir.mkdir(exist_ok=True)
    for name, board in dashboards(settings).items():
        path = board_dir / name
        path.write_text(json.dumps(board, indent=2) + "\n")
        written.append(path)
    return written
