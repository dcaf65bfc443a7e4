"""Students end to end on a seeded world: a training set in Iceberg labeled by a teacher
trained on another seed's human-labeled sample, `freshlabel student train | eval |
export`, and the student served by a real Triton beside the teacher."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from freshlabel.demo import quick_teacher
from infra import triton
from infra.catalog import ensure_namespace, ensure_table, open_catalog
from infra.config import Settings
from infra.process import free_port, stop
from schemas import RelevanceLabel
from serving.dataset import build_training_set
from serving.labeler.labeler import teacher_input
from serving.student.features import PAIR_FEATURES, Featurizer, StudentInputs
from serving.student.model import Student, StudentConfig, StudentError, train_student
from serving.teacher.export import ExportOptions, export_teacher
from serving.teacher.model import Teacher
from streams.arrow_rows import SourcePosition, to_arrow
from streams.generator.sample import enriched_impressions
from tests.conftest import freshlabel, make_settings, takes_long

IMPRESSIONS = 6_000
TABLE = "students_world"


def _append(settings: Settings, table_name: str, events: list) -> None:  # type: ignore[type-arg]
    catalog = open_catalog(settings)
    ensure_namespace(catalog, settings.catalog.namespace)
    table = ensure_table(catalog, settings.catalog.namespace, table_name)
    positions = [SourcePosition(0, i) for i in range(len(events))]
    table.append(to_arrow(table, events, positions, "test", datetime.now(UTC)))


@pytest.fixture(scope="module")
@takes_long
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:  # type: ignore[type-arg]
    """A seeded world's enriched rows and teacher labels in Iceberg, its truth on disk, and
    a training set of the teacher's labels."""
    root = tmp_path_factory.mktemp("students")
    settings = make_settings(root / "state")
    settings.generator.impressions = IMPRESSIONS
    settings.generator.truth_dir = root / "truth"
    made = freshlabel(
        settings,
        "generate",
        "--no-kafka",
        "--impressions",
        str(IMPRESSIONS),
        "--seed",
        str(settings.generator.seed),
        "--truth-dir",
        str(root / "truth"),
        timeout=300,
    )
    assert made.returncode == 0, made.stderr
    teacher_dir = quick_teacher(settings, root / "teacher")
    rows = [row for row, _ in enriched_impressions(settings)]
    assert len(rows) == IMPRESSIONS
    _append(settings, "impressions_enriched", rows)

    teacher = Teacher.load(teacher_dir, runtime="onnx", quantize="int8")
    served = f"{teacher.version}+onnx-int8"
    texts = [teacher_input(r) for r in rows]
    predicted = teacher.predict([r.query for r in rows], texts)
    labeled_at = datetime.now(UTC)
    labels = [
        RelevanceLabel(
            impression_id=r.impression_id,
            query=r.query,
            pin_id=r.pin_id,
            teacher_version=served,
            label_scale=teacher.scale,
            probs=[float(x) for x in predicted.probs[i]],
            score=float(predicted.score[i]),
            labeled_at=labeled_at,
            input_hash=f"h{i}",
            impression_time=r.event_time,
        )
        for i, r in enumerate(rows)
    ]
    _append(settings, "labels", labels)
    assert build_training_set(settings, served, TABLE) == IMPRESSIONS
    times = sorted(r.event_time for r in rows)
    return {
        "settings": settings,
        "root": root,
        "teacher_dir": teacher_dir,
        "served": served,
        "until": times[int(0.6 * len(times))],
    }


@pytest.fixture(scope="module")
def trained(world: dict) -> dict:  # type: ignore[type-arg]
    out = world["root"] / "student"
    done = freshlabel(
        world["settings"],
        "student",
        "train",
        "--training-set",
        TABLE,
        "--out",
        str(out),
        "--teacher",
        str(world["teacher_dir"]),
        "--until",
        world["until"].isoformat(),
        "--version",
        "student-test",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return {**world, "student_dir": out}


def test_student_beats_the_bi_encoder_cosine_on_hidden_truth(trained: dict) -> None:  # type: ignore[type-arg]
    done = freshlabel(
        trained["settings"],
        "student",
        "eval",
        "--model",
        str(trained["student_dir"]),
        "--training-set",
        TABLE,
        "--teacher",
        str(trained["teacher_dir"]),
        "--truth",
        str(trained["root"] / "truth"),
        "--json",
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    # Evaluated on the impressions after the training window only.
    assert report["rows_inside_training_window"] == 0
    assert 0.3 * IMPRESSIONS < report["rows"] < 0.5 * IMPRESSIONS
    truth = report["vs_truth"]
    assert truth["pairs"] == report["rows"]
    student, cosine = truth["student"], truth["bi_cosine"]
    assert student["ndcg10"] > cosine["ndcg10"]
    assert np.mean(list(student["auroc"].values())) > np.mean(list(cosine["auroc"].values()))
    # It learned the teacher, not a constant.
    assert report["vs_teacher"]["qwk"] > 0.5
    assert report["serving"]["pairs_per_s"] > 0
    assert report["serving"]["request_p99_ms"] > 0
    # The evaluation is kept in the manifest.
    manifest = json.loads((trained["student_dir"] / "manifest.json").read_text())
    assert manifest["metrics"]["vs_truth"]["student"]["ndcg10"] == student["ndcg10"]


def test_manifest_rebuilds_the_student_exactly(trained: dict) -> None:  # type: ignore[type-arg]
    settings = trained["settings"]
    manifest = json.loads((trained["student_dir"] / "manifest.json").read_text())
    table = open_catalog(settings).load_table(f"{settings.catalog.namespace}.{TABLE}")
    recorded = manifest["training_set"]
    snapshot = table.current_snapshot()
    assert snapshot is not None and recorded["snapshot_id"] == snapshot.snapshot_id
    assert recorded["teacher_version"] == trained["served"] == manifest["teacher_version"]
    assert recorded["table"] == TABLE and recorded["until"] == trained["until"].isoformat()
    versions = manifest["feature_versions"]
    assert versions["pair_features"] == ",".join(PAIR_FEATURES)
    assert versions["bi_encoder_numerics"] == "onnx-int8"
    assert versions["teacher_version"] == trained["served"].split("+")[0]

    # The table moves on (a rebuild of the training set is a new snapshot) ...
    build_training_set(settings, trained["served"], TABLE)
    rebuilt = table.refresh().current_snapshot()
    assert rebuilt is not None and rebuilt.snapshot_id != recorded["snapshot_id"]
    # ... and the recorded snapshot still gives the same student.
    again = trained["root"] / "student-again"
    done = freshlabel(
        settings,
        "student",
        "train",
        "--training-set",
        TABLE,
        "--out",
        str(again),
        "--teacher",
        str(trained["teacher_dir"]),
        "--until",
        recorded["until"],
        "--snapshot-id",
        str(recorded["snapshot_id"]),
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    first, second = Student.load(trained["student_dir"]), Student.load(again)
    assert second.manifest.training_set["snapshot_id"] == recorded["snapshot_id"]
    for (w1, b1), (w2, b2) in zip(first.weights, second.weights, strict=True):
        np.testing.assert_array_equal(w1, w2)
        np.testing.assert_array_equal(b1, b2)


@pytest.mark.stack
def test_triton_serves_the_student_beside_the_teacher(trained: dict) -> None:  # type: ignore[type-arg]
    import tritonclient.http as httpclient

    root = trained["root"]
    repo = root / "repo"
    export_teacher(trained["teacher_dir"], repo, 1, ExportOptions(runtime="onnx", quantize="int8"))
    done = freshlabel(
        trained["settings"],
        "student",
        "export",
        "--model",
        str(trained["student_dir"]),
        "--repo",
        str(repo),
        "--version",
        "1",
    )
    assert done.returncode == 0, done.stderr
    ports = {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}
    settings = Settings(state_dir=root / "triton-state", triton={"repository": repo, **ports})
    student = Student.load(trained["student_dir"])
    featurizer = Featurizer.from_teacher(trained["teacher_dir"])
    rows = [row for row, _ in enriched_impressions(trained["settings"], share=0.02)]
    texts = [teacher_input(r) for r in rows]
    inputs = featurizer.inputs([r.query for r in rows], texts)
    expected = student.predict(inputs)
    record = triton.start_triton(settings)
    try:
        triton.wait_ready(settings, record)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http_port']}")
        assert client.is_model_ready("student") and client.is_model_ready("teacher")
        got = []
        for start in range(0, len(inputs), 16):  # several requests, batched by Triton or not
            part = inputs.take(np.arange(start, min(start + 16, len(inputs))))
            tensors = []
            for name, value in (
                ("query_embedding", part.query_embedding),
                ("pin_embedding", part.pin_embedding),
                ("pair_features", part.pair),
            ):
                tensor = httpclient.InferInput(name, list(value.shape), "FP32")
                tensor.set_data_from_numpy(value)
                tensors.append(tensor)
            result = client.infer("student", tensors)
            got.append((result.as_numpy("probs"), result.as_numpy("label").reshape(-1)))
        metadata = client.get_model_config("student")
    finally:
        stop(record)
    np.testing.assert_allclose(np.concatenate([p for p, _ in got]), expected.probs, atol=1e-5)
    assert np.concatenate([lab for _, lab in got]).tolist() == expected.label.tolist()
    parameters = metadata["parameters"]
    assert parameters["student_version"]["string_value"] == "student-test"
    assert parameters["teacher_version"]["string_value"] == trained["served"]


def test_student_refuses_features_of_another_teacher(trained: dict, tmp_path: Path) -> None:  # type: ignore[type-arg]
    student = Student.load(trained["student_dir"])
    versions = dict(student.manifest.feature_versions, bm25="0000")
    with pytest.raises(ValueError, match="bm25"):
        student.check_features(versions)


@pytest.mark.slow  # trains four students
def test_hard_and_soft_targets_and_clear_errors() -> None:
    rng = np.random.default_rng(1)
    n = 400
    pair = rng.normal(size=(n, len(PAIR_FEATURES))).astype(np.float32)
    inputs = StudentInputs(
        rng.normal(size=(n, 8)).astype(np.float32), rng.normal(size=(n, 8)), pair
    )
    labels = 1 + (pair[:, 0] > 0) + (pair[:, 1] > 0)
    config = StudentConfig(epochs=40, targets="hard", hidden=[32], batch_size=16, patience=40)
    hard = train_student(inputs, 4, labels=labels, config=config)
    assert (hard.predict(inputs).label == labels).mean() > 0.85
    probs = np.eye(4)[labels - 1] * 0.9 + 0.025
    soft = train_student(
        inputs, 4, probs=probs, config=config.model_copy(update={"targets": "soft"})
    )
    assert (soft.predict(inputs).label == labels).mean() > 0.85
    with pytest.raises(StudentError, match="probabilities"):
        train_student(inputs, 4, labels=labels, config=StudentConfig(targets="soft"))
    with pytest.raises(StudentError, match="labels must be 1..4"):
        train_student(inputs, 4, labels=labels + 3, config=config)
    with pytest.raises(ValueError, match="pair features have shape"):
        StudentInputs(inputs.query_embedding, inputs.pin_embedding, pair[:, :3])
