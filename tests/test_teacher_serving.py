"""Train a tiny teacher, export it, serve it from a real Triton server, query it with the
async client; and the clear errors when the server or the model version is missing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from freshlabel.cli import main
from infra import stack, triton
from infra.config import Settings, TritonSettings
from infra.process import free_port, stop
from serving.client import TeacherClient, TeacherUnavailable, TeacherVersionMissing
from serving.teacher.data import load_pairs
from serving.teacher.export import ExportOptions, export_teacher, prepare_repository, served_version
from serving.teacher.model import Teacher
from serving.teacher.onnx_runtime import export_onnx, onnx_file
from serving.teacher.train import TrainConfig, train_teacher
from tests.conftest import make_settings, starts_servers, takes_long
from tests.teacher_fixtures import world_sample

# A few optimizer steps: enough to exercise every part; quality is not the point here.
# Four cross-encoder layers and a trimmed bi-encoder view: what a served teacher records
# and applies is exercised end to end (export, ONNX, Triton).
TINY = TrainConfig(
    epochs=1,
    max_steps=3,
    max_length=48,
    batch_size=16,
    val_fraction=0.25,
    cross_encoder_layers=4,
    trainable_layers=2,
    bi_encoder_budgets={"description": 3, "top_queries": 0},
    bi_encoder_markers=False,
    cross_encoder_stopword_fields=["description", "caption"],
)
# The platform's default serving path (runtime, quantization) is what these tests serve.
SERVED = TritonSettings()


def triton_ports() -> dict[str, int]:
    return {"http_port": free_port(), "grpc_port": free_port(), "metrics_port": free_port()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return world_sample(tmp_path_factory.mktemp("data") / "world.parquet")


@pytest.fixture(scope="module")
@takes_long
def tiny_teacher(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("teachers") / "tiny"
    train_teacher(load_pairs(world, "world"), out, TINY, version="tiny-test")
    # Once, fp32 then int8 from it: every export and load below reuses these graphs.
    export_onnx(out, "none")
    export_onnx(out, "int8")
    return out


def served_teacher(path: Path) -> Teacher:
    """The teacher in-process exactly as the served repository runs it."""
    return Teacher.load(path, runtime=SERVED.runtime, quantize=SERVED.quantize)


@pytest.fixture(scope="module")
@starts_servers
def served(tiny_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One real Triton per module, on a freshly exported repository, stopped by PID."""
    root = tmp_path_factory.mktemp("triton")
    repo = root / "repo"
    export_teacher(
        tiny_teacher, repo, 1, ExportOptions(runtime=SERVED.runtime, quantize=SERVED.quantize)
    )
    settings = Settings(state_dir=root / "state", triton={"repository": repo, **triton_ports()})
    record = triton.start_triton(settings)
    try:
        triton.wait_ready(settings, record)
        yield settings
    finally:
        stop(record)


def pairs_of(world: Path, n: int) -> tuple[list[str], list[str]]:
    pairs = load_pairs(world, "world")
    return pairs.queries[:n], pairs.pin_texts[:n]


def served_and_expected(
    served: Settings, teacher: Path, world: Path, n: int, batch_size: int, in_flight: int
) -> tuple[dict[str, str], list[Any], Any]:
    """For the first `n` pairs of `world`: the served model's parameters
    (`TeacherClient.check`), the labels Triton serves to a client sending `batch_size`
    pairs a request and at most `in_flight` requests at once, and the in-process
    prediction of the same teacher to compare them with."""
    queries, pin_texts = pairs_of(world, n)

    async def main() -> tuple[dict[str, str], list[Any]]:
        async with TeacherClient.from_settings(
            served, batch_size=batch_size, max_in_flight=in_flight
        ) as client:
            params = await client.check()
            return params, await client.score(queries, pin_texts)

    params, labels = asyncio.run(main())
    return params, labels, served_teacher(teacher).predict(queries, pin_texts)


def test_export_writes_cpu_and_gpu_configs_with_teacher_metadata(
    tiny_teacher: Path, tmp_path: Path
) -> None:
    export_teacher(tiny_teacher, tmp_path, 1, ExportOptions(max_queue_delay_us=2000))
    target = export_teacher(
        tiny_teacher, tmp_path, 2, ExportOptions(max_queue_delay_us=2000, gpu_precision="fp16")
    )
    model = tmp_path / "teacher"
    cpu = (model / "config.pbtxt").read_text()
    gpu = (model / "configs" / "gpu.pbtxt").read_text()
    assert 'backend: "python"' in cpu and "KIND_CPU" in cpu and "KIND_GPU" in gpu
    assert "max_queue_delay_microseconds: 2000" in cpu and "max_batch_size: 64" in cpu
    assert 'name: "query" data_type: TYPE_STRING' in cpu
    assert 'name: "probs" data_type: TYPE_FP32 dims: [ 4 ]' in cpu
    for config in (cpu, gpu):  # the bi-encoder's vectors, for students (both instance kinds)
        assert 'name: "query_embedding" data_type: TYPE_FP32 dims: [ 384 ]' in config
        assert 'name: "pin_embedding" data_type: TYPE_FP32 dims: [ 384 ]' in config
    for key in ("teacher_version.1", "teacher_version.2", "label_scale.2"):
        assert f'key: "{key}"' in cpu
    assert (target / "model.py").is_file() and (target / "teacher" / "manifest.json").is_file()
    assert (target / "lib" / "serving" / "teacher" / "text.py").is_file()
    assert 'key: "runtime" value { string_value: "torch" }' in cpu
    assert 'key: "gpu_precision" value { string_value: "fp16" }' in gpu
    assert not (target / "teacher" / "onnx").exists()  # torch serves from the weights
    # fp16 GPU instances change labels: their config names every version with `+fp16`;
    # the fp32 CPU config keeps the trained name.
    assert 'key: "teacher_version.1" value { string_value: "tiny-test" }' in cpu
    assert 'key: "teacher_version.2" value { string_value: "tiny-test+fp16" }' in gpu
    assert 'key: "teacher_version" value { string_value: "tiny-test+fp16" }' in gpu
    with pytest.raises(ValueError, match="positive integer"):
        export_teacher(tiny_teacher, tmp_path, 0, ExportOptions())


@pytest.mark.parametrize(
    ("options", "kind", "served"),
    [
        (ExportOptions(), "KIND_CPU", "t-1"),
        (ExportOptions(runtime="onnx"), "KIND_CPU", "t-1"),
        (ExportOptions(runtime="onnx", quantize="int8"), "KIND_CPU", "t-1+onnx-int8"),
        (ExportOptions(quantize="int8"), "KIND_CPU", "t-1+torch-int8"),
        (ExportOptions(runtime="onnx", quantize="int8"), "KIND_GPU", "t-1"),
        (ExportOptions(gpu_precision="fp16"), "KIND_GPU", "t-1+fp16"),
        (ExportOptions(gpu_precision="fp16"), "KIND_CPU", "t-1"),
    ],
)
def test_served_version_names_the_numerics_that_change_labels(
    options: ExportOptions, kind: str, served: str
) -> None:
    assert served_version("t-1", options, kind) == served


def test_export_options_follow_the_settings_and_overrides() -> None:
    settings = Settings(triton={"runtime": "onnx", "quantize": "int8", "gpu_precision": "fp16"})
    options = ExportOptions.from_settings(settings, quantize="none")
    assert (options.runtime, options.quantize, options.gpu_precision) == ("onnx", "none", "fp16")
    assert options.teacher_batch_size == settings.teacher.infer_batch_size


def test_served_probabilities_match_in_process_inference(
    served: Settings, tiny_teacher: Path, world: Path
) -> None:
    params, served_labels, expected = served_and_expected(served, tiny_teacher, world, 40, 4, 8)
    assert len(served_labels) == 40
    probs = np.asarray([r.probs for r in served_labels])
    np.testing.assert_allclose(probs, expected.probs, atol=1e-5)
    np.testing.assert_allclose([r.score for r in served_labels], expected.score, atol=1e-5)
    assert [r.label for r in served_labels] == expected.label.tolist()
    assert {r.model_version for r in served_labels} == {"1"}
    # Served int8: the labels say so in their version.
    assert {r.teacher_version for r in served_labels} == {"tiny-test+onnx-int8"}
    assert params["label_scale"] == "4"


def test_served_embeddings_equal_the_in_process_bi_encoder(
    served: Settings, tiny_teacher: Path, world: Path
) -> None:
    """`query_embedding` / `pin_embedding` are the vectors the served teacher's bi cosine
    read: the in-process bi-encoder's embeddings of the queries and of the pin texts as its
    view reads them; sent only to requests that name them."""
    import tritonclient.grpc as grpcclient

    queries, pin_texts = pairs_of(world, 24)

    async def main():
        async with TeacherClient.from_settings(served, batch_size=5, max_in_flight=4) as client:
            rich = await client.score(queries, pin_texts, embeddings=True)
            plain = await client.score(queries, pin_texts)
            return client.serves_embeddings, rich, plain

    serves, rich, plain = asyncio.run(main())
    teacher = served_teacher(tiny_teacher)
    want_q, want_p = teacher.embeddings(queries, pin_texts)
    assert serves and want_q.shape == (24, 384)
    got_q = np.stack([r.query_embedding for r in rich])
    got_p = np.stack([r.pin_embedding for r in rich])
    assert got_q.dtype == np.float32 and got_p.shape == (24, 384)
    np.testing.assert_allclose(got_q, want_q, atol=1e-6)
    np.testing.assert_allclose(got_p, want_p, atol=1e-6)
    # The pin side is the bi-encoder's view of the text (the recipe trims it), not the text.
    bi = teacher.bi_encoder
    assert bi is not None
    view = bi.pin_view
    assert view(pin_texts[0]) != pin_texts[0]
    np.testing.assert_allclose(got_p[0], bi.embed([view(pin_texts[0])])[0], 1e-6)
    # Asking for them changes no label; a request that does not name them gets none.
    assert [r.probs for r in rich] == [r.probs for r in plain]
    assert all(r.query_embedding is None and r.pin_embedding is None for r in plain)
    # A raw request naming no outputs gets every declared one (Triton's rule).
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{served.triton.grpc_port}")
    inputs = [
        grpcclient.InferInput("query", [1, 1], "BYTES"),
        grpcclient.InferInput("pin_text", [1, 1], "BYTES"),
    ]
    inputs[0].set_data_from_numpy(np.asarray([[queries[0].encode()]], dtype=object))
    inputs[1].set_data_from_numpy(np.asarray([[pin_texts[0].encode()]], dtype=object))
    result = client.infer(served.triton.model_name, inputs)
    np.testing.assert_allclose(result.as_numpy("query_embedding")[0], want_q[0], atol=1e-6)
    client.close()


def test_predict_with_embeddings_is_predict_and_the_cosines_vectors(
    tiny_teacher: Path, world: Path
) -> None:
    """Both runtimes (eager torch is also the GPU path): the same probabilities as
    `predict`, and embeddings whose dot products are the bi cosine feature."""
    queries, pin_texts = pairs_of(world, 16)
    for teacher in (Teacher.load(tiny_teacher), served_teacher(tiny_teacher)):
        prediction, q, p = teacher.predict_with_embeddings(queries, pin_texts)
        assert teacher.bi_encoder is not None
        np.testing.assert_array_equal(prediction.probs, teacher.predict(queries, pin_texts).probs)
        np.testing.assert_allclose(
            (q * p).sum(axis=1), teacher.bi_encoder.cosine(queries, pin_texts), atol=1e-7
        )
        empty, eq, ep = teacher.predict_with_embeddings([], [])
        assert empty.probs.shape == (0, 4) and eq.shape == ep.shape == (0, 384)


def test_many_in_flight_requests_come_back_in_order(
    served: Settings, tiny_teacher: Path, world: Path
) -> None:
    _, one_by_one, expected = served_and_expected(served, tiny_teacher, world, 96, 1, 32)
    np.testing.assert_allclose([r.score for r in one_by_one], expected.score, atol=1e-5)


def test_onnx_runtime_matches_eager_torch(tiny_teacher: Path, world: Path) -> None:
    queries, pin_texts = pairs_of(world, 48)
    eager_teacher = Teacher.load(tiny_teacher)
    onnx_teacher = Teacher.load(tiny_teacher, runtime="onnx")
    # the recipe's layers and bi-encoder view are recorded and applied by every runtime
    assert eager_teacher.manifest.bi_encoder_view() == TINY.bi_encoder_view()
    assert eager_teacher.cross_encoder.model.config.num_hidden_layers == 4
    assert eager_teacher.manifest.cross_encoder_view() == TINY.cross_encoder_view()
    assert "the" in eager_teacher.manifest.cross_encoder_stopwords
    for teacher in (eager_teacher, onnx_teacher):
        assert teacher.bi_encoder is not None
        assert teacher.bi_encoder.pin_view == TINY.bi_encoder_view()
        assert teacher.cross_encoder.pin_view == TINY.cross_encoder_view()
    eager = eager_teacher.predict(queries, pin_texts)
    onnx = onnx_teacher.predict(queries, pin_texts)
    # the optimizer's fused ops sum in another order: float32 noise of ~1e-5
    np.testing.assert_allclose(onnx.probs, eager.probs, atol=3e-5)
    np.testing.assert_allclose(onnx.score, eager.score, atol=3e-5)
    assert onnx.label.tolist() == eager.label.tolist()
    for part in ("cross_encoder", "bi_encoder"):  # exported from the teacher's own weights
        assert onnx_file(tiny_teacher, part, "none").stat().st_size > 1_000_000
    with pytest.raises(ValueError, match="CPU only"):
        Teacher.load(tiny_teacher, runtime="onnx", device="cuda:0")
    # int8 runs each pair alone: its answer does not depend on what else was batched
    # (dynamic quantization scales by the whole input's range). No embedding LRU here,
    # so every call below really runs both encoders.
    int8 = Teacher.load(tiny_teacher, runtime="onnx", quantize="int8", embed_cache_items=0)
    together = int8.predict(queries, pin_texts)
    alone = [int8.predict([q], [p]).probs for q, p in zip(queries[:6], pin_texts[:6], strict=True)]
    np.testing.assert_array_equal(np.concatenate(alone), together.probs[:6])


def test_missing_model_version_is_a_clear_error(served: Settings) -> None:
    async def main():
        async with TeacherClient.from_settings(served, model_version="7") as client:
            await client.score(["oak desk"], ["title: oak desk"])

    with pytest.raises(TeacherVersionMissing, match="version 7") as info:
        asyncio.run(main())
    assert "served: 1" in str(info.value) and "teacher export" in str(info.value)


def test_server_down_is_a_clear_error() -> None:
    settings = Settings(triton={"grpc_port": free_port(), "retries": 1, "retry_backoff_s": 0.05})

    async def main():
        async with TeacherClient.from_settings(settings, timeout_s=3.0) as client:
            await client.score(["oak desk"], ["title: oak desk"])

    with pytest.raises(TeacherUnavailable, match=f"127.0.0.1:{settings.triton.grpc_port}") as info:
        asyncio.run(main())
    assert "freshlabel up" in str(info.value)


def test_cli_eval_json_and_export(
    tiny_teacher: Path,
    world: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process (`main(argv)`): a subprocess would pay torch's import again.
    monkeypatch.setenv("FRESHLABEL_STATE_DIR", str(tmp_path / "state"))
    argv = ["teacher", "eval", "--data", str(world), "--columns", "world"]
    argv += ["--model", str(tiny_teacher), "--report", str(tmp_path / "report"), "--json"]
    assert main(argv) == 0
    metrics = json.loads(capsys.readouterr().out)
    for key in ("accuracy", "qwk", "ndcg10", "bm25_ndcg10", "biencoder_ndcg10", "auroc"):
        assert key in metrics
    for name in ("report.md", "confusion.png", "calibration.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
    repo = tmp_path / "repo"
    argv = ["teacher", "export", "--model", str(tiny_teacher), "--repo", str(repo)]
    assert main([*argv, "--version", "3", "--runtime", "onnx"]) == 0
    assert (repo / "teacher" / "3" / "model.py").is_file()
    graphs = sorted(p.name for p in (repo / "teacher" / "3" / "teacher" / "onnx").iterdir())
    suffix = "int8.onnx" if SERVED.quantize == "int8" else "onnx"
    assert graphs == [f"bi_encoder.{suffix}", f"cross_encoder.{suffix}"]
    assert main(["teacher", "eval", "--data", str(world), "--columns", "crowdflower"]) == 2
    assert "missing column" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.stack
def test_up_serves_the_configured_teacher_and_status_shows_it(
    tiny_teacher: Path, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path / "state", triton=triton_ports(), teacher={"model_dir": tiny_teacher}
    )
    prepare_repository(settings)  # what `freshlabel up` does first
    stack.up(settings)
    try:
        report = {s.name: s for s in stack.status(settings)}
        assert report["triton"].healthy, report["triton"].detail
        assert "versions 1" in report["triton"].detail
    finally:
        stopped = stack.down(settings)
    assert any(s.startswith("triton") for s in stopped)
    assert not triton.triton_ready(settings)
