"""The teacher's encoders written directly as ONNX graphs from their weights.

A BERT encoder is a short, fixed recipe, so the graph is built op by op from the model's
state dict instead of traced from PyTorch: onnxruntime's fused CPU kernels
(`EmbedLayerNormalization`, `Attention`, `SkipLayerNormalization`, `BiasGelu`, from its
`com.microsoft` domain) appear by construction, not by the optimizer recognizing a
pattern that moves with every transformers release (transformers 5's attention is no
longer recognized). A layer is seven nodes, not ~38; the shape arithmetic a trace
records (Shape/Gather/Concat/Reshape/Transpose per head split) is gone, and dynamic int8
quantization turns each `Attention` into one `QAttention` (one quantized Q|K|V product).

The computation is the model's own, to float rounding (tests compare with eager torch on
padded batches at 1e-5):
- embeddings: word + position (0..n-1) + token type, LayerNorm;
- each layer: self-attention over the tokens the attention mask keeps, output projection,
  residual + LayerNorm, feed-forward with exact (erf) GELU, residual + LayerNorm;
- `head="cross"`: the pooler and the classifier over the [CLS] position. The last layer
  runs for [CLS] alone (its keys and values still read every token): nothing else reads
  the other positions' outputs, and skipping them saves most of a layer (-16 to -20% of
  the cross-encoder's time at 55 tokens, docs/benchmarks.md).
- `head="bi"`: the attention-masked mean of the last layer, L2-normalized (the
  sentence-transformers embedding of all-MiniLM-L6-v2).

Inputs are int64 `input_ids`, `attention_mask` (1 token, 0 padding; right-padded
batches) and, for the cross-encoder, `token_type_ids`, with dynamic batch and sequence
axes; the output is `logits` (batch, labels) or `embedding` (batch, hidden).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"
OPSET = 17
# onnxruntime 1.23 reads IR versions up to 11; onnx writes its newest by default.
IR_VERSION = 8
HEADS = ("cross", "bi")


class GraphBuildError(ValueError):
    """A model's configuration or weights are not the BERT recipe this builder writes."""


class _Graph:
    """Nodes and initializers being collected, with one name per tensor."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, onnx.TensorProto] = {}

    def _add(self, name: str, value: np.ndarray) -> str:
        self.initializers[name] = numpy_helper.from_array(np.ascontiguousarray(value), name)
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        """A float32 initializer; each weight has its own name (a reused one would
        silently stand for the first tensor given it)."""
        if name in self.initializers:
            raise GraphBuildError(f"initializer {name!r} written twice: give each weight a name")
        return self._add(name, np.asarray(value, dtype=np.float32))

    def axes(self, *values: int) -> str:
        """An int64 constant of `values`, shared by every node that asks for the same."""
        name = "axes_" + "_".join(str(v).replace("-", "m") for v in values)
        if name in self.initializers:
            return name
        return self._add(name, np.asarray(values, dtype=np.int64))

    def op(
        self,
        op_type: str,
        inputs: list[str],
        output: str,
        ms: bool = False,
        extra_outputs: tuple[str, ...] = (),
        **attrs,
    ) -> str:
        """Add a node; returns its (first) output's name, which also names the node."""
        domain = MS_DOMAIN if ms else None
        outputs = [output, *extra_outputs]
        self.nodes.append(
            helper.make_node(op_type, inputs, outputs, name=output, domain=domain, **attrs)
        )
        return output


def _check(config, state: Mapping[str, np.ndarray]) -> None:
    act = getattr(config, "hidden_act", "gelu")
    if act != "gelu":
        raise GraphBuildError(f"hidden_act {act!r}: the graph builder writes erf GELU only")
    kind = getattr(config, "position_embedding_type", "absolute")
    if kind not in (None, "absolute"):
        raise GraphBuildError(f"position_embedding_type {kind!r}: only absolute is written")
    if "embeddings.word_embeddings.weight" not in state:
        raise GraphBuildError("no embeddings.word_embeddings.weight: not a BERT state dict")


def bert_graph(
    state: Mapping[str, np.ndarray],
    config,
    head: Literal["cross", "bi"],
    classifier: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """An fp32 ONNX graph of a BERT encoder with the teacher's head.

    Args:
        state: the `BertModel` weights by name (`embeddings.*`, `encoder.layer.N.*`,
            `pooler.*`), as numpy arrays.
        config: the model's `BertConfig` (heads, layers, LayerNorm epsilon, activation).
        head: "cross" (pooler + classifier over [CLS], last layer for [CLS] only: output
            `logits`) or "bi" (masked mean pooling, L2-normalized: output `embedding`).
        classifier: `weight` (labels, hidden) and `bias` of the classification layer
            (required for "cross").

    Returns:
        The graph, checked by `onnx.checker`.

    Raises:
        GraphBuildError: an unknown head, a missing classifier, or a configuration outside
            the recipe (non-erf activation, relative positions).
    """
    if head not in HEADS:
        raise GraphBuildError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    if head == "cross" and classifier is None:
        raise GraphBuildError("the cross-encoder head needs the classifier's weight and bias")
    _check(config, state)
    heads = int(config.num_attention_heads)
    eps = float(config.layer_norm_eps)
    layers = int(config.num_hidden_layers)
    g = _Graph()

    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if head == "cross" else [])
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names
    ]
    ids = g.op("Cast", ["input_ids"], "input_ids_i32", to=TensorProto.INT32)
    mask = g.op("Cast", ["attention_mask"], "attention_mask_i32", to=TensorProto.INT32)
    position = state["embeddings.position_embeddings.weight"]
    token_type = state["embeddings.token_type_embeddings.weight"]
    if head == "cross":
        segments = g.op("Cast", ["token_type_ids"], "token_type_ids_i32", to=TensorProto.INT32)
        segment_table = g.weight("embeddings.token_type", token_type)
    else:  # every token is segment 0: its row joins the position table
        segments, segment_table, position = "", "", position + token_type[0]
    hidden = g.op(
        "EmbedLayerNormalization",
        [
            ids,
            segments,
            g.weight("embeddings.word", state["embeddings.word_embeddings.weight"]),
            g.weight("embeddings.position", position),
            segment_table,
            g.weight("embeddings.ln.gamma", state["embeddings.LayerNorm.weight"]),
            g.weight("embeddings.ln.beta", state["embeddings.LayerNorm.bias"]),
        ],
        "embeddings",
        ms=True,
        # Its second output (the mask as lengths) is required by onnxruntime's shape
        # inference; the attention reads the 0/1 mask itself.
        extra_outputs=("embeddings.mask_index",),
        epsilon=eps,
    )
    for i in range(layers):
        last = head == "cross" and i == layers - 1
        hidden = _layer(g, state, i, hidden, mask, heads, eps, cls_only=last)
    if head == "cross":
        assert classifier is not None
        output = _cross_head(g, state, classifier, hidden)
        width = int(np.asarray(classifier["weight"]).shape[0])
    else:
        output, width = _bi_head(g, hidden), int(config.hidden_size)
    graph = helper.make_graph(
        g.nodes,
        f"freshlabel_{head}_encoder",
        inputs,
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width])],
        list(g.initializers.values()),
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
        producer_name="freshlabel",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    return model


def _layer(
    g: _Graph,
    state: Mapping[str, np.ndarray],
    i: int,
    hidden: str,
    mask: str,
    heads: int,
    eps: float,
    cls_only: bool,
) -> str:
    """One encoder layer; `cls_only` computes its output for the first position only."""
    p = f"encoder.layer.{i}."
    w = {n: state[f"{p}attention.self.{n}.weight"].T for n in ("query", "key", "value")}
    b = {n: state[f"{p}attention.self.{n}.bias"] for n in ("query", "key", "value")}
    qkv_bias = g.weight(f"l{i}.qkv.bias", np.concatenate([b["query"], b["key"], b["value"]]))
    if not cls_only:
        qkv = g.weight(f"l{i}.qkv", np.concatenate([w["query"], w["key"], w["value"]], axis=1))
        context = g.op(
            "Attention", [hidden, qkv, qkv_bias, mask], f"l{i}.attention", ms=True, num_heads=heads
        )
        residual = hidden
    else:
        residual = g.op("Slice", [hidden, g.axes(0), g.axes(1), g.axes(1)], f"l{i}.cls_hidden")
        query = g.op("MatMul", [residual, g.weight(f"l{i}.query.weight", w["query"])], f"l{i}.q")
        key = g.op("MatMul", [hidden, g.weight(f"l{i}.key.weight", w["key"])], f"l{i}.k")
        value = g.op("MatMul", [hidden, g.weight(f"l{i}.value.weight", w["value"])], f"l{i}.v")
        context = g.op(
            "MultiHeadAttention",
            [query, key, value, qkv_bias, mask],
            f"l{i}.attention",
            ms=True,
            num_heads=heads,
        )
    projected = g.op(
        "MatMul",
        [
            context,
            g.weight(f"l{i}.attention_out.weight", state[f"{p}attention.output.dense.weight"].T),
        ],
        f"l{i}.attention_out",
    )
    hidden = _skip_norm(g, state, f"{p}attention.output", projected, residual, f"l{i}.ln1", eps)
    up = g.op(
        "MatMul",
        [hidden, g.weight(f"l{i}.ffn_in.weight", state[f"{p}intermediate.dense.weight"].T)],
        f"l{i}.ffn_in",
    )
    act = g.op(
        "BiasGelu",
        [up, g.weight(f"l{i}.ffn_in.bias", state[f"{p}intermediate.dense.bias"])],
        f"l{i}.gelu",
        ms=True,
    )
    down = g.op(
        "MatMul",
        [act, g.weight(f"l{i}.ffn_out.weight", state[f"{p}output.dense.weight"].T)],
        f"l{i}.ffn_out",
    )
    return _skip_norm(g, state, f"{p}output", down, hidden, f"l{i}.ln2", eps)


def _skip_norm(
    g: _Graph,
    state: Mapping[str, np.ndarray],
    prefix: str,
    x: str,
    skip: str,
    name: str,
    eps: float,
) -> str:
    """LayerNorm(x + dense bias + skip), the layer's residual step."""
    return g.op(
        "SkipLayerNormalization",
        [
            x,
            skip,
            g.weight(f"{name}.gamma", state[f"{prefix}.LayerNorm.weight"]),
            g.weight(f"{name}.beta", state[f"{prefix}.LayerNorm.bias"]),
            g.weight(f"{name}.bias", state[f"{prefix}.dense.bias"]),
        ],
        name,
        ms=True,
        epsilon=eps,
    )


def _cross_head(
    g: _Graph, state: Mapping[str, np.ndarray], classifier: Mapping[str, np.ndarray], hidden: str
) -> str:
    cls = g.op("Squeeze", [hidden, g.axes(1)], "cls")
    pooler = [
        g.weight("pooler.weight", state["pooler.dense.weight"]),
        g.weight("pooler.bias", state["pooler.dense.bias"]),
    ]
    pooled = g.op("Tanh", [g.op("Gemm", [cls, *pooler], "pooler", transB=1)], "pooled")
    head = [
        g.weight("classifier.weight", classifier["weight"]),
        g.weight("classifier.bias", classifier["bias"]),
    ]
    return g.op("Gemm", [pooled, *head], "logits", transB=1)


def _bi_head(g: _Graph, hidden: str) -> str:
    weights = g.op("Cast", ["attention_mask"], "mask_f32", to=TensorProto.FLOAT)
    per_token = g.op("Unsqueeze", [weights, g.axes(-1)], "mask_f32_3d")
    masked = g.op("Mul", [hidden, per_token], "masked")
    summed = g.op("ReduceSum", [masked, g.axes(1)], "summed", keepdims=0)
    count = g.op("ReduceSum", [weights, g.axes(1)], "count", keepdims=1)
    mean = g.op("Div", [summed, count], "mean")
    return g.op("LpNormalization", [mean], "embedding", axis=-1, p=2)
