"""`freshlabel teacher export`: a trained teacher -> a Triton model repository version.

Layout written (python backend; the repository is self-contained):

    <repo>/<model>/config.pbtxt          CPU instances, dynamic batching
    <repo>/<model>/configs/gpu.pbtxt     the same for KIND_GPU (`--model-config-name=gpu`)
    <repo>/<model>/<N>/model.py          serving/teacher/triton_model.py
    <repo>/<model>/<N>/teacher/          the teacher directory (weights, stacker, manifest)
    <repo>/<model>/<N>/teacher/onnx/     with runtime "onnx": the encoders' ONNX graphs
                                         (fp32 or int8), exported here from the weights
    <repo>/<model>/<N>/lib/serving/...   snapshot of the teacher code it runs

A teacher with a bi-encoder also declares the outputs `query_embedding` and `pin_embedding`
(FP32, [-1, d]): the vectors its bi cosine reads, sent only to requests that name them
(the labeler's drift monitor; serving/labeler/drift.py).

Both configs carry parameters `teacher_version` / `label_scale` (newest version) and
`teacher_version.<N>` / `label_scale.<N>` for every version in the repository: Triton's
model metadata is per model, not per version, so clients map the served version number
they get with each response to the teacher that produced it. The version a config names
is the *served* one (`served_version`): the trained teacher's, plus the numerics when they
change labels (`+onnx-int8`, `+torch-int8` on CPU instances, `+fp16` on GPU instances):
labels are kept one per impression and teacher version, so an int8-served teacher (3.8% of
its labels differ from fp32's) must not share a version with its fp32 self. fp32 in either
runtime, on either device, keeps the trained name (ONNX fp32 agrees with torch to ~1e-5).

Atomic for a polling Triton: the version is staged under a hidden name and renamed into
place, after the configs (replaced atomically) already name it, so Triton never loads a
half-written version nor one its config cannot name. Re-exporting an existing version
number swaps the folder by rename too, but its name and weights change in two steps: roll
to a new number instead.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.config import Quantize, Runtime, TritonModelSettings
from serving.teacher.model import MANIFEST, TeacherManifest
from serving.teacher.onnx_runtime import (
    ONNX_DIR,
    ONNX_PARTS,
    export_onnx,
    instance_numerics,
    numerics_suffix,
    onnx_file,
)

if TYPE_CHECKING:
    from infra.config import Settings

TEACHER_CODE = Path(__file__).resolve().parent
# Only what inference imports; training and evaluation stay out of the served snapshot.
RUNTIME_MODULES = (
    "__init__.py",
    "encoders.py",
    "lexical.py",
    "metrics.py",
    "model.py",
    "onnx_graph.py",
    "onnx_runtime.py",
    "stacker.py",
    "text.py",
)


class ExportOptions(TritonModelSettings):
    """What `export_teacher` writes: the served model (`TritonModelSettings`, whose values the
    platform takes from `settings.triton` through `from_settings`), the teacher's inference
    batch and the batcher's priority levels. The defaults here are the reference path:
    one eager-torch fp32 CPU instance with one thread per core."""

    cpu_instances: int = 1
    model_threads: int = 0
    runtime: Runtime = "torch"
    quantize: Quantize = "none"
    teacher_batch_size: int = 64
    # Triton's dynamic batcher serves priority 1 (live labeling) before 2 (backfill and
    # other bulk callers); a request that names no priority gets the default, bulk.
    priority_levels: int = 2
    default_priority_level: int = 2

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> ExportOptions:
        """The export the platform serves: `settings.triton` (and the teacher's inference
        batch), with `overrides` on top.

        Args:
            settings: the platform settings.
            **overrides: ExportOptions fields that replace the settings' values.

        Returns:
            The options.
        """
        values = settings.triton.model_dump(include=set(TritonModelSettings.model_fields))
        values["teacher_batch_size"] = settings.teacher.infer_batch_size
        return cls(**{**values, **overrides})


def served_version(trained: str, options: ExportOptions, kind: str) -> str:
    """The teacher version the labels of a `kind` ("KIND_CPU" / "KIND_GPU") instance carry.

    Args:
        trained: the trained teacher's version (its manifest).
        options: the export's runtime, quantization and GPU precision.
        kind: the instance kind of the config.

    Returns:
        `trained`, plus `+<runtime>-int8` (CPU, int8) or `+fp16` (GPU, fp16).
    """
    numerics = instance_numerics(
        kind == "KIND_GPU", options.runtime, options.quantize, options.gpu_precision
    )
    return trained + numerics_suffix(*numerics)


def embedding_width(teacher_dir: Path) -> int | None:
    """The width of a teacher's bi-encoder embeddings (None: it has no bi-encoder)."""
    manifest = TeacherManifest.model_validate_json((teacher_dir / MANIFEST).read_text())
    config = teacher_dir / "bi_encoder" / "config.json"
    if not manifest.uses_bi_encoder or not config.is_file():
        return None
    return int(json.loads(config.read_text())["hidden_size"])


def _embedding_dims(widths: set[int]) -> str | None:
    """Dims of the `query_embedding` / `pin_embedding` outputs over the repository's
    versions: their common width, -1 when versions differ, None when none has a
    bi-encoder (a version without one sends no embeddings; the client says so)."""
    if not widths:
        return None
    return str(widths.pop()) if len(widths) == 1 else "-1"


def _config(
    options: ExportOptions,
    kind: str,
    instances: int,
    parameters: dict[str, str],
    scale: int,
    embedding_dims: str | None = None,
) -> str:
    params = "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}'
        for k, v in sorted(parameters.items())
    )
    embeddings = (
        ""
        if embedding_dims is None
        else (
            f',\n  {{ name: "query_embedding" data_type: TYPE_FP32 dims: [ {embedding_dims} ] }},'
            f'\n  {{ name: "pin_embedding" data_type: TYPE_FP32 dims: [ {embedding_dims} ] }}'
        )
    )
    preferred = sorted(
        {b for b in (8, 16, 32, options.max_batch_size) if b <= options.max_batch_size}
    )
    return f"""# Written by `freshlabel teacher export`; regenerated on every export.
name: "{options.model_name}"
backend: "python"
max_batch_size: {options.max_batch_size}
input [
  {{ name: "query" data_type: TYPE_STRING dims: [ 1 ] }},
  {{ name: "pin_text" data_type: TYPE_STRING dims: [ 1 ] }}
]
output [
  {{ name: "probs" data_type: TYPE_FP32 dims: [ {scale} ] }},
  {{ name: "score" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "label" data_type: TYPE_INT32 dims: [ 1 ] }}{embeddings}
]
version_policy: {{ latest {{ num_versions: 1 }} }}
instance_group [ {{ count: {instances} kind: {kind} }} ]
dynamic_batching {{
  preferred_batch_size: [ {", ".join(str(b) for b in preferred)} ]
  max_queue_delay_microseconds: {options.max_queue_delay_us}
  priority_levels: {options.priority_levels}
  default_priority_level: {options.default_priority_level}
}}
{params}
"""


def _versions(model_dir: Path) -> dict[int, TeacherManifest]:
    found = {}
    for child in model_dir.iterdir() if model_dir.is_dir() else ():
        manifest = child / "teacher" / MANIFEST
        if child.name.isdigit() and manifest.is_file():
            found[int(child.name)] = TeacherManifest.model_validate_json(manifest.read_text())
    return found


def install_version(staging: Path, target: Path) -> Path:
    """Move a fully written version folder into place by rename (replacing an existing one
    the same way), so a polling Triton sees no version or the whole of it; returns `target`."""
    retired = target.with_name(f".{target.name}.retired-{os.getpid()}")
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    shutil.rmtree(retired, ignore_errors=True)
    return target


def write_atomically(path: Path, text: str) -> None:
    """Write `path` so a reader sees the old or the new content, never a part."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def export_teacher(teacher_dir: Path, repo: Path, version: int, options: ExportOptions) -> Path:
    """Write (or replace) version `version` of the model; returns the version folder."""
    if version < 1:
        raise ValueError(f"--version must be a positive integer (Triton versions), got {version}")
    manifest_path = teacher_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{teacher_dir} is not a trained teacher (no {MANIFEST}); "
            "run `freshlabel teacher train --out DIR` first"
        )
    manifest = TeacherManifest.model_validate_json(manifest_path.read_text())
    model_dir = repo / options.model_name
    existing = _versions(model_dir)
    scales = {m.scale for n, m in existing.items() if n != version}
    if scales and scales != {manifest.scale}:
        raise ValueError(
            f"{model_dir} serves label scale {sorted(scales)} but {teacher_dir} predicts "
            f"1..{manifest.scale}; the output shape is per model: export it under another "
            "--model-name"
        )
    target = model_dir / str(version)
    existing[version] = manifest
    newest = max(existing)
    parameters = {
        "label_scale": str(existing[newest].scale),
        "torch_threads": str(options.model_threads),
        "teacher_batch_size": str(options.teacher_batch_size),
        "quantize": options.quantize,
        "runtime": options.runtime,
        "gpu_precision": options.gpu_precision,
    }
    for n, m in existing.items():
        parameters[f"label_scale.{n}"] = str(m.scale)

    def versions(kind: str) -> dict[str, str]:
        served = {
            f"teacher_version.{n}": served_version(m.version, options, kind)
            for n, m in existing.items()
        }
        return {**parameters, **served, "teacher_version": served[f"teacher_version.{newest}"]}

    widths = {
        w
        for n in existing
        if (w := embedding_width(teacher_dir if n == version else model_dir / str(n) / "teacher"))
    }
    dims = _embedding_dims(widths)

    # Stage the whole version beside its final place, under a name Triton ignores (not a
    # number), so a polling Triton never sees a half-written version.
    staging = model_dir / f".{version}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    # ONNX graphs only for this export's runtime and quantization: reused when the teacher
    # directory already holds them, else exported from its weights.
    shutil.copytree(teacher_dir, staging / "teacher", ignore=shutil.ignore_patterns(ONNX_DIR))
    if options.runtime == "onnx":
        for part in ONNX_PARTS:
            ready = onnx_file(teacher_dir, part, options.quantize)
            if ready.is_file():
                copy = onnx_file(staging / "teacher", part, options.quantize)
                copy.parent.mkdir(exist_ok=True)
                shutil.copy2(ready, copy)
        export_onnx(teacher_dir, options.quantize, out_dir=staging / "teacher")
    lib = staging / "lib" / "serving"
    (lib / "teacher").mkdir(parents=True)
    (lib / "__init__.py").write_text('"""Snapshot of freshlabel serving code."""\n')
    for name in RUNTIME_MODULES:
        shutil.copy2(TEACHER_CODE / name, lib / "teacher" / name)
    shutil.copy2(TEACHER_CODE / "triton_model.py", staging / "model.py")
    # Bytecode now, not when the stub first imports the code: a repository polled by Triton
    # (--model-control-mode=poll) would see new __pycache__ files and reload the model.
    compileall.compile_dir(staging, quiet=1)

    # Configs first, each replaced atomically: when Triton loads version N its config
    # already names teacher_version.N (a response of a version the config does not name
    # would be labeled `unknown`, which the labeler refuses as unavailable).
    (model_dir / "configs").mkdir(exist_ok=True)
    write_atomically(
        model_dir / "config.pbtxt",
        _config(
            options,
            "KIND_CPU",
            options.cpu_instances,
            versions("KIND_CPU"),
            manifest.scale,
            dims,
        ),
    )
    write_atomically(
        model_dir / "configs" / "gpu.pbtxt",
        _config(
            options,
            "KIND_GPU",
            options.gpu_instances,
            versions("KIND_GPU"),
            manifest.scale,
            dims,
        ),
    )
    # Then the version, by rename: Triton sees no version N or the whole of it.
    return install_version(staging, target)


def prepare_repository(settings: Settings) -> None:
    """Export the configured teacher (`teacher.model_dir`) as version 1 of the Triton
    repository when the repository has no model yet; nothing when either is not so.

    The embedded stack serves what the repository holds and knows nothing of teachers, so
    the composition root (`freshlabel up`, the demo) calls this before starting it.

    Args:
        settings: The platform settings (teacher.model_dir, triton.repository).
    """
    from infra import triton

    model_dir = settings.teacher.model_dir
    if model_dir is None or triton.model_present(settings):
        return
    export_teacher(
        Path(model_dir), triton.repository_path(settings), 1, ExportOptions.from_settings(settings)
    )
