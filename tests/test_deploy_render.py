"""`freshlabel deploy render | validate`: manifests follow the settings and validate offline.

No stack: rendering is pure, validation reads the Kubernetes schemas kubernetes-validate ships
and the CRDs in ../shared/k8s/crds/ (tests that need them skip, loudly, without them).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from freshlabel.cli import main
from freshlabel.deploy.cli import load_profile
from freshlabel.deploy.render import (
    CONFIG_FILE,
    JOB_ENTRY,
    RenderError,
    flink_configuration,
    render,
)
from freshlabel.deploy.validate import CRD_DIR, CustomResource, load_crds, validate_documents
from infra.config import PROJECT_ROOT, Settings
from streams.enrich.job import job_config

PRODUCTION = PROJECT_ROOT / "infra" / "profiles" / "production.yaml"
ALT = PROJECT_ROOT / "tests" / "profiles" / "production-alt.yaml"
PROFILES = pytest.mark.parametrize("profile", [PRODUCTION, ALT], ids=["production", "alt"])

Rendered = dict[str, list[dict[str, Any]]]


@pytest.fixture(scope="module")
def crds() -> dict[tuple[str, str], CustomResource]:
    if not CRD_DIR.is_dir():
        pytest.skip(f"CRDs missing: {CRD_DIR} does not exist (CI has ../shared/k8s/crds/)")
    return load_crds(CRD_DIR)


def _docs(files: Rendered) -> list[tuple[str, dict[str, Any]]]:
    return [(name, doc) for name, docs in files.items() for doc in docs]


def _by_kind(files: Rendered, kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in _docs(files) if d["kind"] == kind}


def _with(tmp_path: Path, profile: Path, path: str, value: Any) -> Settings:
    """`profile` with the one setting at dotted `path` changed, loaded as the CLI loads it."""
    data = yaml.safe_load(profile.read_text())
    *parents, leaf = path.split(".")
    node = data
    for key in parents:
        node = node.setdefault(key, {})
    node[leaf] = value
    changed = tmp_path / f"{profile.stem}-changed.yaml"
    changed.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_profile(changed)


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", out)
    elif isinstance(value, list) and value:
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}[{i}]", out)
    else:
        out[prefix] = value


def _diff(before: Rendered, after: Rendered) -> set[str]:
    """Every leaf path ("file: Kind/name: path") whose value differs, appears or vanishes."""
    flat: list[dict[str, Any]] = []
    for files in (before, after):
        leaves: dict[str, Any] = {}
        for name, doc in _docs(files):
            _flatten(doc, f"{name}: {doc['kind']}/{doc['metadata']['name']}:", leaves)
        flat.append(leaves)
    a, b = flat
    return {k.replace(":.", ": ") for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def _worker_hashes(files: Rendered) -> set[str]:
    """The config-hash annotation paths of every sink and labeler Deployment."""
    return {
        f"{name}: Deployment/{doc['metadata']['name']}: "
        "spec.template.metadata.annotations.freshlabel.io/config-sha256"
        for name, doc in _docs(files)
        if doc["kind"] == "Deployment" and doc["metadata"]["name"] != "freshlabel-triton"
    }


CONFIG_DATA = f"config.yaml: ConfigMap/freshlabel-config: data.{CONFIG_FILE}"


@PROFILES
def test_profile_renders_and_validates(profile: Path, crds: dict[Any, CustomResource]) -> None:
    files = render(load_profile(profile))
    kinds = {d["kind"] for _, d in _docs(files)}
    assert {"FlinkDeployment", "KafkaTopic", "Deployment", "ScaledObject", "Service"} <= kinds
    assert {"ConfigMap", "ServiceMonitor", "PrometheusRule"} <= kinds
    assert validate_documents(_docs(files), crds) == []
    # Nothing of the machine that rendered them (paths of this checkout) leaks in.
    assert str(PROJECT_ROOT) not in yaml.safe_dump_all([d for _, d in _docs(files)])


@PROFILES
def test_numbers_follow_the_settings(profile: Path) -> None:
    s = load_profile(profile)
    files = render(s)
    d = s.deploy

    topics = {t["spec"]["topicName"]: t["spec"] for t in _by_kind(files, "KafkaTopic").values()}
    assert set(topics) == set(s.platform_topics)
    assert {"labels", "dq.alerts", s.flink.clock_topic, "impressions.enriched.dlq"} <= set(topics)
    for topic, spec in topics.items():
        assert spec["partitions"] == s.topics.partitions_for(topic), topic
        assert spec["replicas"] == s.topics.replication_factor
        assert spec["config"] == s.topic_config(topic)
    for changelog in ("pin_content", "pin_captions"):
        assert topics[changelog]["config"]["cleanup.policy"] == "compact"
    for topic, days in (
        ("board_saves", s.flink.top_boards_window_days),
        ("engagements", s.flink.top_queries_window_days),
    ):
        assert int(topics[topic]["config"]["retention.ms"]) >= days * 86_400_000, topic

    # KEDA never scales a worker past the partitions of the topic it reads.
    for scaled in _by_kind(files, "ScaledObject").values():
        trigger = scaled["spec"]["triggers"][0]
        if trigger["type"] == "kafka":
            partitions = topics[trigger["metadata"]["topic"]]["partitions"]
            bound = d.labeler_max_replicas if "labeler" in scaled["metadata"]["name"] else None
            bound = bound or (d.sink_max_replicas if "sink" in scaled["metadata"]["name"] else None)
            assert scaled["spec"]["maxReplicaCount"] == min(bound or partitions, partitions)

    # Pods read exactly these settings: the ConfigMap loads back into the same values.
    config = yaml.safe_load(files["config.yaml"][0]["data"][CONFIG_FILE])
    assert config["sink"]["batch_seconds"] == s.sink.batch_seconds
    assert "deploy" not in config
    back = Settings(**config)
    assert back.topics == s.topics and back.sink == s.sink and back.flink == s.flink

    deployments = _by_kind(files, "Deployment")
    triton = deployments["freshlabel-triton"]["spec"]["template"]["spec"]["containers"][0]
    assert f"--model-repository={d.triton_repository_uri}/{d.teacher_version}" in triton["args"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == str(d.triton_gpus)
    assert {p["containerPort"] for p in triton["ports"]} == {
        s.triton.http_port,
        s.triton.grpc_port,
        s.triton.metrics_port,
    }
    sink = deployments["freshlabel-sink-labels"]["spec"]["template"]["spec"]["containers"][0]
    assert sink["args"] == ["sink", "run", "--topic", "labels", "--table", "labels"]
    assert sink["ports"][0]["containerPort"] == (s.sink.metrics_port or d.metrics_port)
    labeler = deployments["freshlabel-labeler"]["spec"]["template"]["spec"]["containers"][0]
    assert labeler["ports"][0]["containerPort"] == (s.labeler.metrics_port or d.metrics_port)

    flink = _by_kind(files, "FlinkDeployment")[s.flink.job_name]["spec"]
    configuration = flink["flinkConfiguration"]
    assert configuration == flink_configuration(s)
    for key, value in job_config(s).items():
        assert configuration[key] == value, key
    assert configuration["execution.checkpointing.dir"].startswith("s3://")
    assert configuration["state.backend.type"] == "rocksdb"
    assert flink["job"]["args"][:2] == ["-py", f"/opt/freshlabel/{JOB_ENTRY}"]
    assert (PROJECT_ROOT / JOB_ENTRY).is_file()
    assert flink["job"]["upgradeMode"] == "last-state"
    assert flink["job"].get("initialSavepointPath") == d.flink_initial_savepoint
    assert flink["job"].get("savepointTriggerNonce") == d.flink_savepoint_nonce


def test_the_second_profile_differs_where_its_settings_do() -> None:
    prod, alt = render(load_profile(PRODUCTION)), render(load_profile(ALT))
    partitions = {
        name: {t["spec"]["topicName"]: t["spec"]["partitions"] for t in files["topics.yaml"]}
        for name, files in (("prod", prod), ("alt", alt))
    }
    assert partitions["prod"]["impressions.enriched"] == 48
    assert partitions["alt"]["impressions.enriched"] == 24
    assert _by_kind(alt, "ScaledObject")["freshlabel-labeler"]["spec"]["maxReplicaCount"] == 24


def test_one_partition_count_changes_its_topic_and_its_scaler_only(tmp_path: Path) -> None:
    before = render(load_profile(PRODUCTION))
    after = render(_with(tmp_path, PRODUCTION, "topics.partitions.labels", 4))
    assert _diff(before, after) == {
        "topics.yaml: KafkaTopic/labels: spec.partitions",
        "freshlabel-sink-labels.yaml: ScaledObject/freshlabel-sink-labels: spec.maxReplicaCount",
        CONFIG_DATA,
        *_worker_hashes(before),
    }


def test_batch_seconds_change_the_workers_config_only(tmp_path: Path) -> None:
    before = render(load_profile(ALT))
    after = render(_with(tmp_path, ALT, "sink.batch_seconds", 45))
    assert yaml.safe_load(after["config.yaml"][0]["data"][CONFIG_FILE])["sink"] == {
        "batch_rows": 50000,
        "batch_seconds": 45.0,
    }
    assert _diff(before, after) == {CONFIG_DATA, *_worker_hashes(before)}


def test_teacher_version_changes_triton_only(tmp_path: Path) -> None:
    before = render(load_profile(PRODUCTION))
    after = render(_with(tmp_path, PRODUCTION, "deploy.teacher_version", "crowdflower-2"))
    where = "triton.yaml: Deployment/freshlabel-triton: "
    assert _diff(before, after) == {
        where + "metadata.labels.freshlabel.io/teacher-version",
        where + "spec.template.metadata.labels.freshlabel.io/teacher-version",
        where + "spec.template.spec.containers[0].args[0]",
    }
    args = _by_kind(after, "Deployment")["freshlabel-triton"]["spec"]["template"]["spec"]
    assert args["containers"][0]["args"][0].endswith("/crowdflower-2")


def test_invalid_manifests_are_refused_with_one_line_each(
    crds: dict[Any, CustomResource],
) -> None:
    files = render(load_profile(PRODUCTION))
    broken = copy.deepcopy(files)
    triton = next(d for d in broken["triton.yaml"] if d["kind"] == "Deployment")
    triton["spec"]["template"]["spec"]["containers"][0]["imagePulPolicy"] = "Always"
    broken["topics.yaml"][0]["spec"]["partitions"] = "many"
    broken["flink-enrich.yaml"][0]["spec"]["job"]["upgradeMode"] = "keep-everything"
    broken["extra.yaml"] = [{"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {}}]
    errors = validate_documents(_docs(broken), crds)
    assert len(errors) == 4, errors
    assert all("\n" not in e for e in errors)
    joined = "\n".join(errors)
    assert (
        "triton.yaml: Deployment/freshlabel-triton: spec.template.spec.containers[0]: "
        "Additional properties are not allowed ('imagePulPolicy' was unexpected)"
    ) in joined
    assert "topics.yaml: KafkaTopic/impressions: spec.partitions: 'many' is not of type" in joined
    assert "flink-enrich.yaml: FlinkDeployment/freshlabel-enrich: spec.job.upgradeMode:" in joined
    assert "extra.yaml: Widget/?: apiVersion: unknown kind example.com/v1 Widget" in joined

    # Schema-valid, but more replicas than the topic has partitions.
    too_many = copy.deepcopy(files)
    next(d for d in too_many["labeler.yaml"] if d["kind"] == "ScaledObject")["spec"][
        "maxReplicaCount"
    ] = 1000
    (error,) = validate_documents(_docs(too_many), crds)
    assert error.startswith("labeler.yaml: ScaledObject/freshlabel-labeler: spec.maxReplicaCount")


def test_cli_writes_files_that_validate(tmp_path: Path, crds: dict[Any, CustomResource]) -> None:
    out = tmp_path / "manifests"
    assert main(["deploy", "render", "--profile", str(ALT), "--out", str(out)]) == 0
    assert main(["deploy", "validate", str(out)]) == 0
    board = json.loads((out / "dashboards" / "freshlabel.json").read_text())
    assert board["panels"]
    (out / "labeler.yaml").write_text(
        (out / "labeler.yaml").read_text().replace("containerPort:", "containerPorts:")
    )
    assert main(["deploy", "validate", str(out)]) == 1


def test_a_secret_in_the_profile_is_refused(tmp_path: Path) -> None:
    settings = _with(tmp_path, PRODUCTION, "broker.client_options.sasl_plain_password", "hunter2")
    with pytest.raises(RenderError, match="broker.client_options.sasl_plain_password"):
        render(settings)


def test_triton_scaler_query_parses_and_names_tritons_metrics() -> None:
    import promql_parser

    files = render(load_profile(PRODUCTION))
    (trigger,) = _by_kind(files, "ScaledObject")["freshlabel-triton"]["spec"]["triggers"]
    names: set[str | None] = set()  # a selector by labels only has no name

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(trigger["metadata"]["query"]), visit)
    # Triton's own counters (its /metrics on the metrics port): queue time and successes.
    assert names == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
