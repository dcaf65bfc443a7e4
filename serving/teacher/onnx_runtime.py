"""ONNX Runtime inference for the teacher's two encoders (fp32, or int8 dynamic quantization).

The graphs are exported from the teacher's own weights (its `cross_encoder/` and
`bi_encoder/` folders) into `<teacher>/onnx/`: by `freshlabel teacher export` into the
served version folder, or on the first `Teacher.load(runtime="onnx")` of a directory that
has none. Nothing is downloaded. Each graph has dynamic batch and sequence axes, so the
length-sorted batches of `encoders.py` are padded per batch exactly as with torch.

- fp32: the graph `onnx_graph.bert_graph` builds from the weights, onnxruntime's fused
  kernels by construction; agrees with eager torch to ~1e-5 (tests/test_teacher_onnx_graph.py,
  tests/test_teacher_serving.py). The cross-encoder's last layer runs for the [CLS]
  position only, the one its pooler reads.
- int8: the fp32 graph with every weight product quantized dynamically (weights int8 per
  output channel, activations uint8 scaled by each input's own range; each `Attention`
  becomes a `QAttention`; the attention's activation x activation products and the
  embedding tables stay fp32). Labels can move, so its quality is
  measured by cross-validation with the int8 graphs scoring the held-out rows
  (`teacher eval --cv 3 --runtime onnx --quantize int8`; docs/teacher.md has the figures).

int8 graphs run one row at a time, unpadded: dynamic quantization scales activations by the
range of the whole input tensor, so in a batch one pair's probabilities would move (by up
to 0.04, measured) with its batch-mates and their padding; alone, a pair gets the same
answer however Triton batched it, as the cache assumes. On 2 cores this costs nothing
(onnxruntime's int8 throughput at batch 1 matched batch 64: no padding to compute).

Sessions run with all graph optimizations, `threads` intra-op threads (0: one per core)
and no spin-waiting, so an idle instance does not burn a core another process needs.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np

from serving.teacher.encoders import BiEncoder, CrossEncoder, load_tokenizer
from serving.teacher.text import PinView

RUNTIMES = ("torch", "onnx")
QUANTIZE_MODES = ("none", "int8")
# Float precision of the torch encoders on a GPU (fp16 halves memory and time there).
PRECISIONS = ("fp32", "fp16")
ONNX_DIR = "onnx"
# The teacher's parts that run as ONNX graphs (each a folder of the teacher directory).
ONNX_PARTS = ("cross_encoder", "bi_encoder")


def instance_numerics(
    on_gpu: bool, runtime: str, quantize: str, gpu_precision: str
) -> tuple[str, str, str]:
    """The (runtime, quantize, precision) a served instance runs: a GPU instance runs eager
    torch at `gpu_precision` (onnxruntime here is the CPU build); a CPU instance runs
    `runtime` with `quantize`, in fp32. The Triton model loads with it and the export
    names the served teacher version after it (`numerics_suffix`).
    """
    if on_gpu:
        return "torch", "none", gpu_precision
    return runtime, quantize, "fp32"


def numerics_suffix(runtime: str, quantize: str, precision: str) -> str:
    """What labels of an instance running these numerics add to the trained teacher's
    version: `+<runtime>-int8`, `+fp16`, or nothing (fp32 in any runtime: the ONNX graphs
    agree with torch to ~1e-5)."""
    if quantize == "int8":
        return f"+{runtime}-int8"
    return "+fp16" if precision == "fp16" else ""


class OnnxExportError(RuntimeError):
    """A teacher's encoders could not be exported to ONNX (names the teacher and the part)."""


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Refuse an unknown runtime or quantization mode with the allowed values.

    Args:
        name: the setting's name, for the message.
        value: the given value.
        allowed: the accepted values.

    Returns:
        `value`.

    Raises:
        ValueError: `value` is not one of `allowed`.
    """
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    return value


def onnx_file(teacher_dir: Path, part: str, quantize: str) -> Path:
    """Where `part` ("cross_encoder" or "bi_encoder") lives as ONNX for `quantize`."""
    check_choice("quantize", quantize, QUANTIZE_MODES)
    suffix = ".int8.onnx" if quantize == "int8" else ".onnx"
    return Path(teacher_dir) / ONNX_DIR / f"{part}{suffix}"


def _parts(teacher_dir: Path) -> list[str]:
    return [p for p in ONNX_PARTS if (Path(teacher_dir) / p).is_dir()]


def _build(part: str, source: Path, target: Path) -> None:
    """Write one encoder's fp32 graph to `target`, built from its weights (`onnx_graph`)."""
    import onnx
    from transformers import BertForSequenceClassification, BertModel

    from serving.teacher.onnx_graph import bert_graph

    head: Literal["cross", "bi"]
    if part == "cross_encoder":
        model = BertForSequenceClassification.from_pretrained(str(source)).eval()
        bert, head = model.bert, "cross"
        classifier = {k: v.detach().numpy() for k, v in model.classifier.state_dict().items()}
    else:
        bert, head, classifier = BertModel.from_pretrained(str(source)).eval(), "bi", None
    state = {k: v.detach().numpy() for k, v in bert.state_dict().items()}
    onnx.save(bert_graph(state, bert.config, head, classifier), str(target))


def _quantize(source: Path, target: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its "consider pre-processing" note, on every call
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            # The weight products and each Attention (-> QAttention, one Q|K|V product);
            # the embedding tables stay fp32 (a lookup costs the same either way).
            op_types_to_quantize=["MatMul", "Attention"],
            extra_options={
                # Only weight MatMuls: quantizing the attention's Q.K^T and P.V products
                # too costs far more accuracy (cosine to fp32 0.93, not 0.99, on real pins).
                "MatMulConstBOnly": True,
                # The optimizer's fused ops carry no inferred types; their outputs are fp32.
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            },
        )
    finally:
        root.setLevel(level)


def export_onnx(
    teacher_dir: Path, quantize: str = "none", out_dir: Path | None = None
) -> list[Path]:
    """Write the teacher's encoders as ONNX graphs for `quantize` (skips those present).

    Args:
        teacher_dir: a trained teacher directory (`cross_encoder/`, optional `bi_encoder/`).
        quantize: "none" (fp32 graphs) or "int8" (dynamic int8 graphs; the fp32 ones they
            derive from are built in a temporary folder and not kept).
        out_dir: the teacher directory to write `onnx/` into (default: `teacher_dir`).

    Returns:
        The graph files, cross-encoder first.

    Raises:
        ValueError: unknown `quantize`.
        OnnxExportError: the export of a part failed (the cause is chained).
    """
    teacher_dir = Path(teacher_dir)
    out_dir = Path(out_dir or teacher_dir)
    written = []
    for part in _parts(teacher_dir):
        target = onnx_file(out_dir, part, quantize)
        written.append(target)
        if target.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
            work = Path(tmp)
            try:
                # int8 derives from the fp32 graph when one exists (here or in the source).
                ready = [onnx_file(d, part, "none") for d in (out_dir, teacher_dir)]
                final = next((f for f in ready if f.is_file()), work / "fp32.onnx")
                if not final.is_file():
                    _build(part, teacher_dir / part, final)
                if quantize == "int8":
                    _quantize(final, work / "int8.onnx")
                    final = work / "int8.onnx"
                elif final.parent != work:  # an fp32 graph of the source: copy, never move
                    shutil.copy2(final, work / "fp32.onnx")
                    final = work / "fp32.onnx"
            except Exception as exc:
                raise OnnxExportError(
                    f"exporting {teacher_dir / part} to ONNX ({quantize}) failed: {exc}; "
                    "check that the teacher directory is complete (freshlabel teacher train)"
                ) from exc
            # Readers see no graph or the whole graph.
            os.replace(final, target)
    return written


def session(path: Path, threads: int = 0):
    """An onnxruntime CPU session over `path`, all graph optimizations on.

    Args:
        path: an ONNX graph from `export_onnx`.
        threads: intra-op threads; 0 lets onnxruntime use one per core.

    Returns:
        `onnxruntime.InferenceSession`.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads > 0:
        options.intra_op_num_threads = threads
    # Spinning threads keep a core busy between batches (tokenizing, Triton's queue).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(onnx_session, inputs: dict[str, np.ndarray], row_by_row: bool) -> np.ndarray:
    """The graph's first output for one padded batch, float32. `row_by_row` (int8) runs
    each row alone, cut to its own length: batch-independent results."""
    if not row_by_row:
        return onnx_session.run(None, inputs)[0].astype(np.float32, copy=False)
    lengths = inputs["attention_mask"].sum(1)
    rows = [
        onnx_session.run(None, {k: v[i : i + 1, : lengths[i]] for k, v in inputs.items()})[0]
        for i in range(len(lengths))
    ]
    return np.concatenate(rows).astype(np.float32, copy=False)


class OnnxCrossEncoder(CrossEncoder):
    """The cross-encoder's forward pass in onnxruntime; tokenizing and batching as torch's."""

    def __init__(
        self,
        tokenizer,
        onnx_session,
        num_labels: int,
        row_by_row: bool = False,
        pin_view: PinView | None = None,
    ):
        # No torch weights: every method that reads `model` is overridden here.
        super().__init__(None, tokenizer, pin_view)  # type: ignore[arg-type]
        self.session = onnx_session
        self._num_labels = num_labels
        self.row_by_row = row_by_row

    @classmethod
    def load_onnx(
        cls,
        teacher_dir: Path,
        quantize: str,
        threads: int = 0,
        pin_view: PinView | None = None,
    ) -> OnnxCrossEncoder:
        path = onnx_file(teacher_dir, "cross_encoder", quantize)
        onnx_session = session(path, threads)
        labels = int(onnx_session.get_outputs()[0].shape[-1])
        tokenizer = load_tokenizer(Path(teacher_dir) / "cross_encoder")
        return cls(tokenizer, onnx_session, labels, quantize == "int8", pin_view)

    @property
    def num_labels(self) -> int:
        return self._num_labels

    def _forward_logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return _run(self.session, inputs, self.row_by_row)

    def save(self, path: Path) -> None:
        raise TypeError("an ONNX cross-encoder is a serving copy; save the torch teacher")


class OnnxBiEncoder(BiEncoder):
    """The bi-encoder's forward pass (pooling and normalization included) in onnxruntime."""

    def __init__(
        self,
        tokenizer,
        onnx_session,
        max_length: int,
        cache_items: int = 0,
        row_by_row: bool = False,
        pin_view: PinView | None = None,
    ):
        super().__init__(None, tokenizer, max_length, cache_items, pin_view)
        self.row_by_row = row_by_row
        self.session = onnx_session
        self._hidden = int(onnx_session.get_outputs()[0].shape[-1])

    @classmethod
    def load_onnx(
        cls,
        teacher_dir: Path,
        quantize: str,
        max_length: int,
        threads: int = 0,
        cache_items: int = 0,
        pin_view: PinView | None = None,
    ) -> OnnxBiEncoder:
        path = onnx_file(teacher_dir, "bi_encoder", quantize)
        tokenizer = load_tokenizer(Path(teacher_dir) / "bi_encoder")
        return cls(
            tokenizer,
            session(path, threads),
            max_length,
            cache_items,
            row_by_row=quantize == "int8",
            pin_view=pin_view,
        )

    @property
    def hidden_size(self) -> int:
        return self._hidden

    def _forward_embed(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return _run(self.session, inputs, self.row_by_row)

    def save(self, path: Path) -> None:
        raise TypeError("an ONNX bi-encoder is a serving copy; save the torch teacher")
