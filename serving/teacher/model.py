"""A trained teacher as one object: load a teacher directory, predict (query, pin_text)
pairs. The Triton model and in-process callers both go through `Teacher.predict`, so
served and local probabilities are the same computation.

A teacher directory holds:
  manifest.json    manifest: version, label scale, data hash, settings, metrics
  cross_encoder/   fine-tuned MiniLM + classification head (safetensors, tokenizer)
  bi_encoder/      frozen all-MiniLM-L6-v2 (zero-shot cosine feature), when used
  bm25.json        frozen BM25 corpus statistics
  stacker.json     logistic stacker + QWK thresholds
  onnx/            the encoders as ONNX graphs (fp32 / int8), for `runtime="onnx"`;
                   exported from the weights above (serving.teacher.onnx_runtime)

Runtimes: "torch" (eager PyTorch, the reference; any device) and "onnx" (onnxruntime on
the CPU: fp32 graphs agree with torch to ~1e-5, int8 graphs are measured by CV).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
import torch
from pydantic import BaseModel, Field

from serving.teacher.encoders import BiEncoder, CrossEncoder
from serving.teacher.lexical import LEXICAL_FEATURES, Bm25Stats, lexical_matrix
from serving.teacher.onnx_runtime import (
    PRECISIONS,
    QUANTIZE_MODES,
    RUNTIMES,
    OnnxBiEncoder,
    OnnxCrossEncoder,
    check_choice,
    export_onnx,
)
from serving.teacher.stacker import Stacker, expected_grade
from serving.teacher.text import PinView

MANIFEST = "manifest.json"
# Bi-encoder embeddings a loaded teacher keeps by text: 20,000 x 384 floats, ~31 MB.
EMBED_CACHE_ITEMS = 20_000


class TeacherManifest(BaseModel):
    version: str
    scale: int
    max_length: int
    uses_bi_encoder: bool = True
    # What the bi-encoder reads of a pin text (`PinView`): word budgets per field and the
    # format. Teachers trained before these fields read the whole text, markers included.
    bi_encoder_budgets: dict[str, int] = Field(default_factory=dict)
    bi_encoder_markers: bool = True
    # The fields whose stop words the cross-encoder does not read, and the stop word list
    # it was trained with (serving reads this list, not the library's). Teachers trained
    # before these fields read every word.
    cross_encoder_stopword_fields: list[str] = Field(default_factory=list)
    cross_encoder_stopwords: list[str] = Field(default_factory=list)
    created_at: str
    data: dict[str, object] = Field(default_factory=dict)
    settings: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, object] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    # Grouped as `name=value` text for Triton metadata and reports.
    features: list[str] = Field(default_factory=list)

    def bi_encoder_view(self) -> PinView:
        """What this teacher's bi-encoder reads of a pin text."""
        return PinView(self.bi_encoder_budgets, self.bi_encoder_markers)

    def cross_encoder_view(self) -> PinView:
        """What this teacher's cross-encoder reads of a pin text."""
        return PinView(
            stopwords=frozenset(self.cross_encoder_stopwords),
            stopword_fields=tuple(self.cross_encoder_stopword_fields),
        )

    def recipe(self) -> dict[str, object]:
        """The training settings this teacher recorded, with what teachers trained before
        a setting existed used: every MiniLM layer in the cross-encoder, and the
        bi-encoder's view. A CV of `--model` reruns this recipe, not today's defaults."""
        return {
            "cross_encoder_layers": 6,
            **self.settings,
            "bi_encoder_budgets": self.bi_encoder_budgets,
            "bi_encoder_markers": self.bi_encoder_markers,
            "cross_encoder_stopword_fields": self.cross_encoder_stopword_fields,
        }


ModuleT = TypeVar("ModuleT", bound=torch.nn.Module)


def quantize_int8(model: ModuleT) -> ModuleT:
    """A copy of `model` (same class) whose Linear layers run dynamic int8."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice; still supported
        # A deep copy with its Linear layers swapped: the class stays.
        return cast(ModuleT, quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8))


def feature_names(scale: int, uses_bi_encoder: bool) -> list[str]:
    names = [f"ce_logp_{k}" for k in range(1, scale + 1)] + ["ce_grade"]
    if uses_bi_encoder:
        names.append("bi_cosine")
    return names + list(LEXICAL_FEATURES)


def cross_encoder_features(logits: np.ndarray) -> np.ndarray:
    logp = torch.log_softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    return np.column_stack([logp, expected_grade(np.exp(logp))])


@dataclass
class TeacherPrediction:
    probs: np.ndarray  # (n, scale), rows sum to 1
    score: np.ndarray  # (n,), expected grade mapped to [0, 1]
    label: np.ndarray  # (n,), 1..scale via the QWK thresholds


class Teacher:
    def __init__(
        self,
        manifest: TeacherManifest,
        cross_encoder: CrossEncoder,
        bi_encoder: BiEncoder | None,
        bm25: Bm25Stats,
        stacker: Stacker,
        batch_size: int = 64,
    ):
        self.manifest = manifest
        self.cross_encoder = cross_encoder
        self.bi_encoder = bi_encoder
        self.bm25 = bm25
        self.stacker = stacker
        self.batch_size = batch_size

    @property
    def scale(self) -> int:
        return self.manifest.scale

    @property
    def version(self) -> str:
        return self.manifest.version

    @classmethod
    def load(
        cls,
        path: Path,
        batch_size: int = 64,
        device: str = "cpu",
        quantize: str = "none",
        runtime: str = "torch",
        threads: int = 0,
        embed_cache_items: int = EMBED_CACHE_ITEMS,
        precision: str = "fp32",
    ) -> Teacher:
        """Load a teacher directory for inference.

        Args:
            path: a trained teacher directory (`manifest.json` and the parts).
            batch_size: rows per encoder forward pass.
            device: torch device ("cpu", "cuda:0"); the ONNX runtime is CPU only.
            quantize: "none" (fp32) or "int8": dynamic int8 of both encoders' linear
                layers (torch: `quantize_dynamic`; onnx: int8 ONNX graphs).
            runtime: "torch" (eager PyTorch) or "onnx" (onnxruntime; graphs under
                `path/onnx/`, exported from the weights here when missing).
            threads: intra-op threads of the ONNX sessions (0: one per core); torch's are
                process-wide (`torch.set_num_threads`).
            embed_cache_items: bi-encoder embeddings kept by text (LRU; 0: none).
            precision: "fp32", or "fp16" for the torch encoders on a CUDA device (half
                the memory traffic; labels may differ from fp32 like int8's do on CPU).

        Returns:
            The teacher.

        Raises:
            FileNotFoundError: `path` is not a teacher directory.
            ValueError: unknown `quantize`, `runtime` or `precision`, onnx with a non-CPU
                device, or fp16 anywhere but torch on CUDA.
        """
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise FileNotFoundError(
                f"{path} is not a teacher directory (no {MANIFEST}); "
                "train one with `freshlabel teacher train --out DIR`"
            )
        check_choice("quantize", quantize, QUANTIZE_MODES)
        check_choice("runtime", runtime, RUNTIMES)
        check_choice("precision", precision, PRECISIONS)
        if precision == "fp16" and (runtime != "torch" or not device.startswith("cuda")):
            raise ValueError(
                f"precision 'fp16' needs runtime 'torch' on a CUDA device, not {runtime!r} on "
                f"{device!r}; on CPU use quantize 'int8' instead"
            )
        manifest = TeacherManifest.model_validate_json((path / MANIFEST).read_text())
        cross_encoder: CrossEncoder
        bi: BiEncoder | None = None
        if runtime == "onnx":
            if device != "cpu":
                raise ValueError(
                    f"runtime 'onnx' runs on the CPU only, not {device!r}; "
                    "use runtime 'torch' on a GPU"
                )
            export_onnx(path, quantize)
            cross_encoder = OnnxCrossEncoder.load_onnx(
                path, quantize, threads, manifest.cross_encoder_view()
            )
            if manifest.uses_bi_encoder:
                bi = OnnxBiEncoder.load_onnx(
                    path,
                    quantize,
                    manifest.max_length,
                    threads,
                    embed_cache_items,
                    manifest.bi_encoder_view(),
                )
        else:
            cross_encoder = CrossEncoder.load(path / "cross_encoder", manifest.cross_encoder_view())
            # PreTrainedModel.to is wrapped by functools.wraps(torch.nn.Module.to), whose
            # typeshed type (_Wrapped) does not bind self: mypy reads `device` as the model.
            cross_encoder.model.to(device)  # type: ignore[arg-type]
            if manifest.uses_bi_encoder:
                bi = BiEncoder.load(
                    path / "bi_encoder",
                    manifest.max_length,
                    embed_cache_items,
                    manifest.bi_encoder_view(),
                )
                bi.torch_model.to(device)  # type: ignore[arg-type]
            if precision == "fp16":
                cross_encoder.model.half()
                if bi is not None:
                    bi.torch_model.half()
            if quantize == "int8":
                cross_encoder.model = quantize_int8(cross_encoder.model)
                if bi is not None:
                    bi.model = quantize_int8(bi.torch_model)
        return cls(
            manifest,
            cross_encoder,
            bi,
            Bm25Stats.load(path / "bm25.json"),
            Stacker.load(path / "stacker.json"),
            batch_size=batch_size,
        )

    def features(
        self,
        queries: Sequence[str],
        pin_texts: Sequence[str],
        logits: np.ndarray | None = None,
        bi_cosine: np.ndarray | None = None,
    ) -> np.ndarray:
        """Stacker inputs; `logits`/`bi_cosine` may be passed in when already computed."""
        if logits is None:
            logits = self.cross_encoder.logits(
                queries, pin_texts, self.manifest.max_length, self.batch_size
            )
        parts = [cross_encoder_features(logits)]
        if self.bi_encoder is not None:
            if bi_cosine is None:
                bi_cosine = self.bi_encoder.cosine(queries, pin_texts)
            parts.append(np.asarray(bi_cosine)[:, None])
        parts.append(lexical_matrix(self.bm25, queries, pin_texts))
        return np.column_stack(parts).astype(np.float64)

    def predict_features(self, x: np.ndarray) -> TeacherPrediction:
        probs = self.stacker.probs(x)
        grade = expected_grade(probs)
        return TeacherPrediction(
            probs=probs.astype(np.float32),
            score=((grade - 1.0) / (self.scale - 1)).astype(np.float32),
            label=self.stacker.labels(probs).astype(np.int32),
        )

    def predict(self, queries: Sequence[str], pin_texts: Sequence[str]) -> TeacherPrediction:
        """Probabilities over the label scale for each (query, pin_text) pair."""
        if len(queries) != len(pin_texts):
            raise ValueError(f"{len(queries)} queries but {len(pin_texts)} pin texts")
        if not queries:
            empty = np.zeros((0, self.scale), dtype=np.float32)
            return TeacherPrediction(empty, np.zeros(0, np.float32), np.zeros(0, np.int32))
        return self.predict_features(self.features(queries, pin_texts))

    def embeddings(
        self, queries: Sequence[str], pin_texts: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bi-encoder embeddings its cosine feature reads: of each query, and of each pin
        text as the bi-encoder's view reads it (what a student's features are made of).

        Returns:
            (n, d) float32 query embeddings and (n, d) pin embeddings, unit length.

        Raises:
            ValueError: the teacher has no bi-encoder.
        """
        if self.bi_encoder is None:
            raise ValueError(f"teacher {self.version} has no bi-encoder: no embeddings to give")
        bi = self.bi_encoder
        return bi.embed(list(queries)), bi.embed([bi.pin_view(t) for t in pin_texts])

    def predict_with_embeddings(
        self, queries: Sequence[str], pin_texts: Sequence[str]
    ) -> tuple[TeacherPrediction, np.ndarray, np.ndarray]:
        """`predict`, plus the embeddings its bi cosine was computed from (no extra forward
        pass: the cosine is taken of these very vectors, as `BiEncoder.cosine` does).

        Returns:
            The prediction, the query embeddings and the pin embeddings (`embeddings`).

        Raises:
            ValueError: the lengths differ, or the teacher has no bi-encoder.
        """
        if len(queries) != len(pin_texts):
            raise ValueError(f"{len(queries)} queries but {len(pin_texts)} pin texts")
        q, p = self.embeddings(queries, pin_texts)
        if not queries:
            return self.predict([], []), q, p
        features = self.features(queries, pin_texts, bi_cosine=(q * p).sum(axis=1))
        return self.predict_features(features), q, p
