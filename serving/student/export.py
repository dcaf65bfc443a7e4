"""`freshlabel student export`: a student -> a second model (`student`) in the teacher's
Triton repository, served beside it.

    <repo>/student/config.pbtxt        CPU instances, dynamic batching, the student's
                                       version, scale, teacher version and feature versions
                                       as parameters
    <repo>/student/<N>/model.py        serving/student/triton_model.py
    <repo>/student/<N>/student/        the student directory (weights, manifest, bm25.json)
    <repo>/student/<N>/lib/serving/... the code it runs (numpy + pydantic, no torch)

Staged under a hidden name and renamed into place after the config, like the teacher's
export, so a polling Triton never loads half a version.
"""

from __future__ import annotations

import compileall
import json
import os
import shutil
from pathlib import Path

from serving.student.model import MANIFEST, Student, StudentError
from serving.teacher.export import install_version, write_atomically

STUDENT_CODE = Path(__file__).resolve().parent
SERVING_CODE = STUDENT_CODE.parent
# What `Student.predict` imports: the student's model and inputs, the lexical module they
# name, and the text helpers it reads.
RUNTIME_MODULES = (
    "student/__init__.py",
    "student/features.py",
    "student/model.py",
    "teacher/__init__.py",
    "teacher/lexical.py",
    "teacher/text.py",
)
MODEL_NAME = "student"


def _config(student: Student, max_batch_size: int, instances: int, version: int) -> str:
    m = student.manifest
    parameters = {
        "student_version": m.version,
        f"student_version.{version}": m.version,
        "label_scale": str(m.scale),
        "teacher_version": m.teacher_version or "",
        "feature_versions": json.dumps(m.feature_versions, sort_keys=True).replace('"', "'"),
    }
    params = "\n".join(
        f'parameters {{ key: "{k}" value {{ string_value: "{v}" }} }}'
        for k, v in sorted(parameters.items())
    )
    return f"""# Written by `freshlabel student export`; regenerated on every export.
name: "{MODEL_NAME}"
backend: "python"
max_batch_size: {max_batch_size}
input [
  {{ name: "query_embedding" data_type: TYPE_FP32 dims: [ {m.embedding_dim} ] }},
  {{ name: "pin_embedding" data_type: TYPE_FP32 dims: [ {m.embedding_dim} ] }},
  {{ name: "pair_features" data_type: TYPE_FP32 dims: [ {len(m.pair_features)} ] }}
]
output [
  {{ name: "probs" data_type: TYPE_FP32 dims: [ {m.scale} ] }},
  {{ name: "score" data_type: TYPE_FP32 dims: [ 1 ] }},
  {{ name: "label" data_type: TYPE_INT32 dims: [ 1 ] }}
]
version_policy: {{ latest {{ num_versions: 1 }} }}
instance_group [ {{ count: {instances} kind: KIND_CPU }} ]
dynamic_batching {{ max_queue_delay_microseconds: 200 }}
{params}
"""


def export_student(
    student_dir: Path,
    repo: Path,
    version: int,
    max_batch_size: int = 1024,
    instances: int = 1,
) -> Path:
    """Write (or replace) version `version` of the `student` model; returns its folder.

    Args:
        student_dir: a trained student directory.
        repo: the Triton model repository (the teacher's).
        version: the Triton version number (positive).
        max_batch_size: pairs Triton may batch into one `execute`.
        instances: CPU instances.

    Returns:
        The version folder.

    Raises:
        ValueError: a version below 1.
        StudentError: `student_dir` holds no student.
    """
    if version < 1:
        raise ValueError(f"--version must be a positive integer (Triton versions), got {version}")
    student = Student.load(student_dir)
    model_dir = Path(repo) / MODEL_NAME
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = model_dir / f".{version}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copytree(student_dir, staging / "student")
    if not (staging / "student" / MANIFEST).is_file():
        raise StudentError(f"{student_dir} lost its {MANIFEST} while copying")
    lib = staging / "lib" / "serving"
    for name in RUNTIME_MODULES:
        (lib / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SERVING_CODE / name, lib / name)
    (lib / "__init__.py").write_text('"""Snapshot of freshlabel serving code."""\n')
    shutil.copy2(STUDENT_CODE / "triton_model.py", staging / "model.py")
    compileall.compile_dir(staging, quiet=1)
    write_atomically(
        model_dir / "config.pbtxt", _config(student, max_batch_size, instances, version)
    )
    return install_version(staging, model_dir / str(version))
