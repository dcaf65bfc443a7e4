"""The teacher's exact inference savings and runtime choices, without training a model:
per-batch padding, pair dedupe, the bi-encoder's embedding LRU, refused settings.
(ONNX against eager torch on a trained teacher: tests/test_teacher_serving.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from serving.teacher.encoders import (
    BiEncoder,
    CrossEncoder,
    base_model_dir,
    load_tokenizer,
    pad_batch,
    unique_pairs,
)
from serving.teacher.onnx_runtime import check_choice, instance_numerics, onnx_file
from serving.teacher.text import PinView


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(base_model_dir())


class CountingCrossEncoder(CrossEncoder):
    """The real tokenizing, dedupe and batching; a forward pass that records its batches."""

    def __init__(self, tokenizer):
        super().__init__(model=None, tokenizer=tokenizer)
        self.batches: list[dict[str, np.ndarray]] = []

    @property
    def num_labels(self) -> int:
        return 2

    def _forward_logits(self, inputs):
        self.batches.append(inputs)
        lengths = inputs["attention_mask"].sum(1)
        return np.column_stack([lengths, inputs["token_type_ids"].sum(1)]).astype(np.float32)


class CountingBiEncoder(BiEncoder):
    def __init__(self, tokenizer, cache_items):
        super().__init__(torch.nn.Identity(), tokenizer, max_length=32, cache_items=cache_items)
        self.rows = 0

    @property
    def hidden_size(self) -> int:
        return 2

    def _forward_embed(self, inputs):
        self.rows += len(inputs["input_ids"])
        lengths = inputs["attention_mask"].sum(1).astype(np.float32)
        return np.column_stack([lengths, np.ones_like(lengths)])


def test_pad_batch_pads_to_the_longest_row_and_marks_segment_b() -> None:
    out = pad_batch([[101, 7, 102, 8, 9, 102], [101, 7, 102]], pad_id=0, sep_id=102)
    assert out["input_ids"].shape == (2, 6) and out["input_ids"].dtype == np.int64
    assert out["input_ids"][1].tolist() == [101, 7, 102, 0, 0, 0]
    assert out["attention_mask"].tolist() == [[1] * 6, [1, 1, 1, 0, 0, 0]]
    assert out["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1], [0] * 6]
    assert "token_type_ids" not in pad_batch([[101, 102]], pad_id=0)


def test_unique_pairs_maps_every_input_back() -> None:
    queries = ["a", "b", "a", "a", "b"]
    texts = ["x", "x", "x", "y", "x"]
    uq, up, inverse = unique_pairs(queries, texts)
    assert list(zip(uq, up, strict=True)) == [("a", "x"), ("b", "x"), ("a", "y")]
    assert [(uq[i], up[i]) for i in inverse] == list(zip(queries, texts, strict=True))


def test_cross_encoder_scores_each_distinct_pair_once_in_length_sorted_batches(
    tokenizer,
) -> None:
    ce = CountingCrossEncoder(tokenizer)
    queries = ["oak desk", "lamp", "oak desk", "red running shoes", "lamp"]
    texts = ["title: oak", "title: a " + "very " * 20 + "long lamp", "title: oak", "t", "x"]
    logits = ce.logits(queries, texts, max_length=24, batch_size=2)
    assert sum(len(b["input_ids"]) for b in ce.batches) == 4  # 5 pairs, 4 distinct
    widths = [b["input_ids"].shape[1] for b in ce.batches]
    assert widths == sorted(widths, reverse=True) and widths[0] == 24  # truncated to 24
    for batch in ce.batches:  # each batch padded to its own longest row, not to 24
        assert batch["attention_mask"].sum(1).max() == batch["input_ids"].shape[1]
    ids = tokenizer(queries, texts, truncation="only_second", max_length=24)["input_ids"]
    assert logits[:, 0].tolist() == [float(len(x)) for x in ids]  # input order kept
    np.testing.assert_array_equal(logits[0], logits[2])
    assert ce.logits([], [], max_length=24).shape == (0, 2)


def test_bi_encoder_lru_embeds_each_text_once_and_stays_bounded(tokenizer) -> None:
    bi = CountingBiEncoder(tokenizer, cache_items=3)
    first = bi.embed(["oak desk", "lamp", "oak desk"])
    assert bi.rows == 2 and first.shape == (3, 2)
    again = bi.embed(["lamp", "oak desk", "vase"])
    assert bi.rows == 3  # only "vase" was new
    np.testing.assert_array_equal(again[1], first[0])
    bi.embed(["chair", "table"])  # evicts the least recently used ("lamp", "oak desk")
    assert len(bi._cache) == 3 and "lamp" not in bi._cache
    uncached = CountingBiEncoder(tokenizer, cache_items=0)
    uncached.embed(["a", "a"])
    uncached.embed(["a"])
    assert uncached.rows == 2 and not uncached._cache
    assert bi.embed([]).shape == (0, 2)


def test_bi_encoder_reads_the_pin_through_its_view(tokenizer) -> None:
    full = "title: oak desk | description: solid oak with two deep drawers"
    trimmed = CountingBiEncoder(tokenizer, cache_items=8)
    trimmed.pin_view = PinView({"description": 2})
    trimmed.cosine(["desk"], [full])
    assert "title: oak desk | description: solid oak" in trimmed._cache
    assert full not in trimmed._cache
    plain = CountingBiEncoder(tokenizer, cache_items=8)
    plain.pin_view = PinView({"description": 2}, markers=False)
    plain.cosine(["desk"], [full])
    assert "oak desk solid oak" in plain._cache
    whole = CountingBiEncoder(tokenizer, cache_items=8)  # the default view: the whole text
    whole.cosine(["desk"], [full])
    assert full in whole._cache
    with pytest.raises(ValueError, match="unknown pin text field 'body'"):
        PinView({"body": 3})


def test_a_teacher_trained_before_bi_encoder_views_reads_the_whole_pin_text() -> None:
    from serving.teacher.model import TeacherManifest

    old = TeacherManifest(
        version="v1",
        scale=4,
        max_length=128,
        created_at="2026-12-01",
        settings={"trainable_layers": 2, "epochs": 2},
    )
    text = "title: oak desk | description: solid oak with two deep drawers"
    assert old.bi_encoder_view()(text) == text
    assert old.cross_encoder_view()(text) == text
    # its CV reruns its own recipe: all six layers, the whole pin text
    recipe = old.recipe()
    assert recipe["cross_encoder_layers"] == 6 and recipe["trainable_layers"] == 2
    assert recipe["bi_encoder_budgets"] == {} and recipe["bi_encoder_markers"] is True
    assert recipe["cross_encoder_stopword_fields"] == []


def test_cross_encoder_keeps_the_bottom_layers_it_is_asked_for() -> None:
    full = CrossEncoder.new(scale=4)
    small = CrossEncoder.new(scale=4, layers=4)
    assert len(full.model.bert.encoder.layer) == 6
    assert len(small.model.bert.encoder.layer) == 4
    assert small.model.config.num_hidden_layers == 4
    with pytest.raises(ValueError, match="cross-encoder layers 7: the base .* has 6; keep"):
        CrossEncoder.new(scale=4, layers=7)
    # the kept layers are the base's own weights, bottom first
    for i in range(4):
        torch.testing.assert_close(
            small.model.bert.encoder.layer[i].state_dict(),
            full.model.bert.encoder.layer[i].state_dict(),
        )


def test_unknown_runtime_or_quantization_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="runtime must be one of torch, onnx, not 'tensorrt'"):
        check_choice("runtime", "tensorrt", ("torch", "onnx"))
    with pytest.raises(ValueError, match="quantize must be one of none, int8"):
        onnx_file(tmp_path, "cross_encoder", "int4")
    assert onnx_file(tmp_path, "bi_encoder", "int8") == tmp_path / "onnx/bi_encoder.int8.onnx"


def test_fp16_is_refused_off_a_gpu(tmp_path) -> None:
    from serving.teacher.model import MANIFEST, Teacher

    (tmp_path / MANIFEST).write_text("{}")  # refused before the manifest is read
    for runtime, device in (("torch", "cpu"), ("onnx", "cuda:0")):
        with pytest.raises(ValueError, match="precision 'fp16' needs runtime 'torch' on a CUDA"):
            Teacher.load(tmp_path, device=device, runtime=runtime, precision="fp16")
    with pytest.raises(ValueError, match="precision must be one of fp32, fp16"):
        Teacher.load(tmp_path, precision="bf16")


@pytest.mark.parametrize(
    ("on_gpu", "numerics"),
    [(False, ("onnx", "int8", "fp32")), (True, ("torch", "none", "fp16"))],
)
def test_a_gpu_instance_runs_eager_torch_at_its_precision_a_cpu_one_the_runtime(
    on_gpu: bool, numerics: tuple[str, str, str]
) -> None:
    assert instance_numerics(on_gpu, "onnx", "int8", "fp16") == numerics


def test_the_served_code_snapshot_holds_every_teacher_module_it_imports() -> None:
    # A served version runs its own copy of RUNTIME_MODULES (`lib/`); a module imported
    # only lazily (e.g. the graph builder, when a version lacks its graphs) must be there.
    import ast

    from serving.teacher.export import RUNTIME_MODULES, TEACHER_CODE

    needed = set()
    for name in RUNTIME_MODULES:
        for node in ast.walk(ast.parse((TEACHER_CODE / name).read_text())):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("serving.teacher."):
                needed.add(module.rsplit(".", 1)[-1] + ".py")
    assert needed, "no serving.teacher imports found: the check reads the wrong files"
    assert needed <= set(RUNTIME_MODULES), (
        f"missing from the snapshot: {needed - set(RUNTIME_MODULES)}"
    )
