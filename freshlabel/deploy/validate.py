"""Offline validation of rendered manifests, as strict as `kubectl apply --validate=strict`.

The guarantee: a folder passes only if every document in it is a kind this module knows and
matches its schema. Core kinds are checked against the Kubernetes OpenAPI schemas that
kubernetes-validate ships (strict: an unknown field is an error), at `KUBERNETES_VERSION`;
custom resources against the `openAPIV3Schema` of the served version in their CRD (the files
in `CRD_DIR`), with unknown fields refused wherever the schema lists properties and does not
preserve unknown fields. A kind with neither is an error, never a pass. Then cross-checks
that a schema cannot express: each KEDA kafka trigger stays within its topic's partitions and
each ScaledObject scales a Deployment of the same folder. Every error is one line: file,
kind/name, the failing path and what is wrong.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from infra.config import PROJECT_ROOT

# The Kubernetes release the manifests target (kubernetes-validate 1.37.0 ships its schemas).
KUBERNETES_VERSION = "1.35.0"
# CRDs of the operators the platform runs on (Flink operator, Strimzi, KEDA,
# prometheus-operator); CI has them beside the repository.
CRD_DIR = PROJECT_ROOT.parent / "shared" / "k8s" / "crds"
# libyaml's loader when present: the Flink operator's CRD alone is 11,000 lines.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class CustomResource:
    """The schema of one served version of one CRD."""

    api_version: str
    kind: str
    schema: dict[str, Any]
    crd_file: str


def _strict(schema: Any) -> Any:
    """Refuse unknown fields where the schema lists properties (what the API server's strict
    field validation does), except where it preserves unknown fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def load_crds(crd_dir: Path = CRD_DIR) -> dict[tuple[str, str], CustomResource]:
    """Every served version of every CRD in `crd_dir`, by (apiVersion, kind).

    Args:
        crd_dir: a folder of CustomResourceDefinition YAML files.

    Returns:
        (group/version, kind) -> its schema (strict).

    Raises:
        FileNotFoundError: `crd_dir` is missing or holds no CRD.
    """
    files = sorted([*crd_dir.glob("*.yml"), *crd_dir.glob("*.yaml")]) if crd_dir.is_dir() else []
    crds: dict[tuple[str, str], CustomResource] = {}
    for path in files:
        for doc in yaml.load_all(path.read_text(), Loader=_LOADER):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc["spec"]
            for version in spec["versions"]:
                if not version.get("served"):
                    continue
                api_version = f"{spec['group']}/{version['name']}"
                schema = copy.deepcopy(version.get("schema", {}).get("openAPIV3Schema", {}))
                # Some CRDs leave the object's own header out of their schema.
                header = schema.setdefault("properties", {})
                header.setdefault("apiVersion", {"type": "string"})
                header.setdefault("kind", {"type": "string"})
                header.setdefault("metadata", {"type": "object"})
                crds[(api_version, spec["names"]["kind"])] = CustomResource(
                    api_version, spec["names"]["kind"], _strict(schema), path.name
                )
    if not crds:
        raise FileNotFoundError(
            f"no CustomResourceDefinitions in {crd_dir}; put the operators' CRDs there "
            "(CI has them in ../shared/k8s/crds/) or pass --crds DIR"
        )
    return crds


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "(document)"


def _metadata_errors(doc: dict[str, Any]) -> list[tuple[str, str]]:
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return [("metadata", "is required")]
    name = meta.get("name")
    errors = []
    if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        errors.append(("metadata.name", f"{name!r} is not a DNS-1123 subdomain"))
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63:
            errors.append((f"metadata.labels.{key}", f"{value!r} is not a label value"))
    return errors


def validate_manifest(
    doc: dict[str, Any], crds: dict[tuple[str, str], CustomResource]
) -> list[tuple[str, str]]:
    """Schema errors of one manifest.

    Args:
        doc: a manifest.
        crds: from `load_crds`.

    Returns:
        (failing path, message) pairs; empty when it is valid.
    """
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [("(document)", "has no apiVersion/kind")]
    crd = crds.get((api_version, kind))
    if crd is not None:
        validator = jsonschema.Draft202012Validator(crd.schema)
        errors = [
            (_path(e.absolute_path), f"{e.message} (CRD {crd.crd_file})")
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        ]
        return _metadata_errors(doc) + errors
    served = sorted(v for v, k in crds if k == kind)
    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [(_path(exc.absolute_path), f"{exc.message} (Kubernetes {exc.version})")]
    except kubernetes_validate.SchemaNotFoundError:
        hint = f"; its CRD serves {', '.join(served)}" if served else ""
        return [
            (
                "apiVersion",
                f"unknown kind {api_version} {kind}: neither a Kubernetes "
                f"{KUBERNETES_VERSION} kind nor a CRD in the CRD folder{hint}",
            )
        ]
    return []


def _cross_checks(docs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    partitions = {
        d["spec"].get("topicName", d["metadata"]["name"]): d["spec"].get("partitions")
        for _, d in docs
        if d.get("kind") == "KafkaTopic" and isinstance(d.get("spec"), dict)
    }
    deployments = {
        (d["metadata"].get("namespace"), d["metadata"]["name"])
        for _, d in docs
        if d.get("kind") == "Deployment"
    }
    errors = []
    for file, d in docs:
        if d.get("kind") != "ScaledObject":
            continue
        where = f"{file}: ScaledObject/{d['metadata']['name']}"
        spec = d["spec"]
        target = spec["scaleTargetRef"]["name"]
        if (d["metadata"].get("namespace"), target) not in deployments:
            errors.append(f"{where}: spec.scaleTargetRef.name: no Deployment {target} rendered")
        for i, trigger in enumerate(spec["triggers"]):
            topic = trigger.get("metadata", {}).get("topic")
            if trigger.get("type") != "kafka" or topic not in partitions:
                continue
            most = spec.get("maxReplicaCount", 100)
            if partitions[topic] is not None and most > partitions[topic]:
                errors.append(
                    f"{where}: spec.maxReplicaCount: {most} replicas for {topic}, which has "
                    f"{partitions[topic]} partitions (trigger {i}); lower the replica bound"
                )
    return errors


def validate_documents(
    docs: list[tuple[str, dict[str, Any]]], crds: dict[tuple[str, str], CustomResource]
) -> list[str]:
    """Validate manifests already in memory (e.g. `render(settings)` flattened).

    Args:
        docs: (file name, manifest) pairs.
        crds: from `load_crds`.

    Returns:
        One line per error ("file: Kind/name: path: message"); empty when all pass.
    """
    errors: list[str] = []
    for file, doc in docs:
        name = (doc.get("metadata") or {}).get("name", "?")
        for where, message in validate_manifest(copy.deepcopy(doc), crds):
            errors.append(f"{file}: {doc.get('kind')}/{name}: {where}: {message}")
    return errors or _cross_checks(docs)


def validate_dir(folder: Path, crd_dir: Path = CRD_DIR) -> list[str]:
    """Validate every manifest in the YAML files of `folder` (not dashboards/).

    Args:
        folder: what `freshlabel deploy render` wrote.
        crd_dir: the CRDs custom resources are checked against.

    Returns:
        One line per error ("file: Kind/name: path: message"); empty when all pass.

    Raises:
        FileNotFoundError: no manifests in `folder`, or no CRDs in `crd_dir`.
    """
    crds = load_crds(crd_dir)
    files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
    if not files:
        raise FileNotFoundError(
            f"no manifests in {folder}; render them first "
            "(`freshlabel deploy render --profile FILE --out DIR`)"
        )
    errors: list[str] = []
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in files:
        try:
            loaded = [d for d in yaml.load_all(path.read_text(), Loader=_LOADER) if d]
        except yaml.YAMLError as exc:
            errors.append(f"{path.name}: not YAML: {str(exc).splitlines()[0]}")
            continue
        for index, doc in enumerate(loaded):
            if isinstance(doc, dict):
                docs.append((path.name, doc))
            else:
                errors.append(f"{path.name}: document {index}: not a mapping")
    return errors + validate_documents(docs, crds)
