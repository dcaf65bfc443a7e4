"""The encoders' ONNX graphs built from their weights (`serving/teacher/onnx_graph.py`):
the same numbers as eager torch on padded batches, the fused kernels by construction, the
int8 form, and configurations outside the recipe refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from transformers import BertConfig, BertModel

from serving.teacher.encoders import BiEncoder, CrossEncoder, base_model_dir, load_tokenizer
from serving.teacher.onnx_graph import GraphBuildError, bert_graph
from serving.teacher.onnx_runtime import _quantize, session

# Builds, exports and runs encoder graphs (seconds each): the second tier.
pytestmark = pytest.mark.slow

PAIRS = (
    ["oak desk", "red shoes", "a"],
    ["title: Oak desk | description: a solid oak desk", "red shoes", "word " * 40],
)


def numpy_state(module: torch.nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def run(model: onnx.ModelProto, path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    onnx.save(model, str(path))
    return session(path, threads=1).run(None, inputs)[0]


@pytest.fixture(scope="module")
def cross_encoder() -> CrossEncoder:
    torch.manual_seed(0)
    return CrossEncoder.new(scale=4, layers=3)


def cross_graph(ce: CrossEncoder) -> onnx.ModelProto:
    bert = ce.model.bert
    return bert_graph(numpy_state(bert), bert.config, "cross", numpy_state(ce.model.classifier))


def test_cross_encoder_graph_equals_eager_torch_on_a_padded_batch(cross_encoder, tmp_path):
    inputs = cross_encoder.collate(cross_encoder.encode(*PAIRS, 64))
    # rows of 16, 7 and 44 tokens: padding in every row but one
    assert inputs["attention_mask"].sum(1).tolist() == [16, 7, 44]
    with torch.inference_mode():
        expected = cross_encoder.model.eval()(**inputs).logits.numpy()
    got = run(
        cross_graph(cross_encoder),
        tmp_path / "cross.onnx",
        {k: v.numpy() for k, v in inputs.items()},
    )
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_bi_encoder_graph_equals_eager_torch_on_a_padded_batch(tmp_path):
    bi = BiEncoder(
        BertModel.from_pretrained(str(base_model_dir())).eval(),
        load_tokenizer(base_model_dir()),
        max_length=64,
    )
    ids = bi.tokenizer(PAIRS[1], padding=True, return_tensors="np")
    inputs = {"input_ids": ids["input_ids"], "attention_mask": ids["attention_mask"]}
    expected = bi._forward_embed(inputs)
    graph = bert_graph(numpy_state(bi.model), bi.model.config, "bi")
    got = run(graph, tmp_path / "bi.onnx", inputs)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)


def test_a_layer_is_seven_fused_nodes_and_the_last_cross_layer_reads_cls_only(cross_encoder):
    ops = [n.op_type for n in cross_graph(cross_encoder).graph.node]
    assert ops.count("EmbedLayerNormalization") == 1
    assert ops.count("SkipLayerNormalization") == 2 * 3 and ops.count("BiasGelu") == 3
    # Attention over every token in the lower layers; the top one asks for [CLS] only.
    assert ops.count("Attention") == 2 and ops.count("MultiHeadAttention") == 1
    assert not {"Shape", "Transpose", "Reshape", "Softmax"} & set(ops)


def test_int8_quantizes_the_weight_products_and_keeps_the_embeddings_fp32(cross_encoder, tmp_path):
    onnx.save(cross_graph(cross_encoder), str(tmp_path / "fp32.onnx"))
    _quantize(tmp_path / "fp32.onnx", tmp_path / "int8.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("QAttention") == 2 and "Attention" not in ops
    assert "EmbedLayerNormalization" in ops and "QEmbedLayerNormalization" not in ops
    assert "MatMul" not in ops  # every weight product runs in int8
    inputs = {
        k: v.numpy() for k, v in cross_encoder.collate(cross_encoder.encode(*PAIRS, 64)).items()
    }
    fp32 = session(tmp_path / "fp32.onnx", threads=1).run(None, inputs)[0]
    int8 = session(tmp_path / "int8.onnx", threads=1).run(None, inputs)[0]
    assert np.abs(int8 - fp32).max() < 0.1 * np.abs(fp32).max()


def test_configurations_outside_the_recipe_are_refused():
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2)
    config.intermediate_size, config.vocab_size = 64, 100  # a tiny random BERT
    state = numpy_state(BertModel(config))
    with pytest.raises(GraphBuildError, match="head must be one of cross, bi, not 'colbert'"):
        bert_graph(state, config, "colbert")  # type: ignore[arg-type]
    with pytest.raises(GraphBuildError, match="needs the classifier"):
        bert_graph(state, config, "cross")
    config.hidden_act = "relu"
    with pytest.raises(GraphBuildError, match="hidden_act 'relu'"):
        bert_graph(state, config, "bi")
