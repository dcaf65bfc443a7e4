"""What a student reads: features computed once per query and once per pin, and a few
numbers per pair. Never raw text at serving time.

- `query_embedding`, `pin_embedding`: the teacher's frozen bi-encoder (all-MiniLM-L6-v2,
  mean-pooled, unit length) on the query and on the pin text as the teacher's bi-encoder
  view reads it. A search stack precomputes both (one per query, one per pin version); the
  served teacher returns them beside its labels, so the labeler gets them for free.
- `pair`: the bi-encoder cosine and the teacher's lexical evidence (BM25 with the
  teacher's frozen corpus statistics, query-term coverage of the title and the text),
  `PAIR_FEATURES` in order.

Engagement rates are not among them: the training sets carry the pin's top queries (which
the lexical features read) but no per-pin rates yet.

The featurizer is pinned to one teacher directory: its bi-encoder weights, its view and its
BM25 statistics. `versions()` names all three, and a student's manifest records them, so a
student is only ever fed the features it was trained on.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serving.teacher.lexical import LEXICAL_FEATURES, Bm25Stats, lexical_matrix

if TYPE_CHECKING:  # torch and transformers stay out of a served student's imports
    from serving.teacher.encoders import BiEncoder
    from serving.teacher.model import TeacherManifest

FEATURE_SET_VERSION = "1"
PAIR_FEATURES: tuple[str, ...] = ("bi_cosine", *LEXICAL_FEATURES)
BM25_FILE = "bm25.json"


class FeatureMismatch(ValueError):
    """Features computed by another bi-encoder, view or statistics than a student's."""


@dataclass
class StudentInputs:
    """A student's inputs for n pairs (float32 rows in pair order)."""

    query_embedding: np.ndarray  # (n, d)
    pin_embedding: np.ndarray  # (n, d)
    pair: np.ndarray  # (n, len(PAIR_FEATURES))

    def __post_init__(self) -> None:
        self.query_embedding = np.asarray(self.query_embedding, dtype=np.float32)
        self.pin_embedding = np.asarray(self.pin_embedding, dtype=np.float32)
        self.pair = np.asarray(self.pair, dtype=np.float32)
        n = len(self.query_embedding)
        if len(self.pin_embedding) != n or len(self.pair) != n:
            raise ValueError(
                f"student inputs disagree on the number of pairs: {n} query embeddings, "
                f"{len(self.pin_embedding)} pin embeddings, {len(self.pair)} pair rows"
            )
        if self.pair.ndim != 2 or self.pair.shape[1] != len(PAIR_FEATURES):
            raise ValueError(
                f"pair features have shape {self.pair.shape}; expected (n, {len(PAIR_FEATURES)})"
                f" for {', '.join(PAIR_FEATURES)}"
            )

    def __len__(self) -> int:
        return len(self.query_embedding)

    def take(self, rows: np.ndarray | Sequence[int]) -> StudentInputs:
        rows = np.asarray(rows)
        return StudentInputs(self.query_embedding[rows], self.pin_embedding[rows], self.pair[rows])

    @classmethod
    def concat(cls, parts: Sequence[StudentInputs]) -> StudentInputs:
        if not parts:
            raise ValueError("no student inputs to concatenate")
        return cls(
            np.concatenate([p.query_embedding for p in parts]),
            np.concatenate([p.pin_embedding for p in parts]),
            np.concatenate([p.pair for p in parts]),
        )


def pair_features(
    bm25: Bm25Stats,
    queries: Sequence[str],
    pin_texts: Sequence[str],
    query_embedding: np.ndarray,
    pin_embedding: np.ndarray,
) -> StudentInputs:
    """The inputs of pairs whose embeddings are already known (the labeler gets them from
    the served teacher): the cosine of the two, and the lexical features of the texts."""
    if len(queries) != len(pin_texts):
        raise ValueError(f"{len(queries)} queries but {len(pin_texts)} pin texts")
    q = np.asarray(query_embedding, dtype=np.float32).reshape(len(queries), -1)
    p = np.asarray(pin_embedding, dtype=np.float32).reshape(len(queries), -1)
    cosine = (q * p).sum(axis=1, keepdims=True)
    lexical = lexical_matrix(bm25, queries, pin_texts)
    return StudentInputs(q, p, np.column_stack([cosine, lexical]))


def _digest(path: Path) -> str:
    """A short content hash of a file, or of a folder's files (names and bytes)."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for file in files:
        h.update(file.name.encode())
        h.update(file.read_bytes())
    return h.hexdigest()[:16]


class Featurizer:
    """Computes `StudentInputs` from text with one teacher's bi-encoder and statistics.

    Args:
        teacher_dir: a trained teacher directory (its `bi_encoder/`, `bm25.json`, manifest).
        bi_encoder: the loaded bi-encoder (an embedding cache by text makes repeats free).
        bm25: the teacher's frozen BM25 statistics.
        manifest: the teacher's manifest (version, bi-encoder view).
        numerics: how the bi-encoder runs ("onnx-int8", "onnx-fp32", "torch-fp32"):
            int8 embeddings differ from fp32 ones, so it is part of the feature version.
    """

    def __init__(
        self,
        teacher_dir: Path,
        bi_encoder: BiEncoder,
        bm25: Bm25Stats,
        manifest: TeacherManifest,
        numerics: str,
    ) -> None:
        self.teacher_dir = Path(teacher_dir)
        self.bi_encoder = bi_encoder
        self.bm25 = bm25
        self.manifest = manifest
        self.numerics = numerics

    @classmethod
    def from_teacher(
        cls,
        teacher_dir: Path,
        runtime: str = "onnx",
        quantize: str = "int8",
        cache_items: int = 200_000,
    ) -> Featurizer:
        """The featurizer of a teacher directory, its bi-encoder running as the served
        teacher's does by default (onnx int8), so training features equal served ones.

        Raises:
            FileNotFoundError: `teacher_dir` is not a teacher directory.
            ValueError: the teacher has no bi-encoder (students read its embeddings).
        """
        from serving.teacher.encoders import BiEncoder
        from serving.teacher.model import MANIFEST, TeacherManifest
        from serving.teacher.onnx_runtime import OnnxBiEncoder, export_onnx

        teacher_dir = Path(teacher_dir)
        if not (teacher_dir / MANIFEST).is_file():
            raise FileNotFoundError(
                f"{teacher_dir} is not a teacher directory (no {MANIFEST}); "
                "train one with `freshlabel teacher train --out DIR`"
            )
        manifest = TeacherManifest.model_validate_json((teacher_dir / MANIFEST).read_text())
        if not manifest.uses_bi_encoder:
            raise ValueError(
                f"teacher {manifest.version} has no bi-encoder; students read its embeddings: "
                "train the teacher with its bi-encoder"
            )
        view = manifest.bi_encoder_view()
        bi: BiEncoder
        if runtime == "onnx":
            export_onnx(teacher_dir, quantize)
            bi = OnnxBiEncoder.load_onnx(
                teacher_dir, quantize, manifest.max_length, 0, cache_items, view
            )
        else:
            bi = BiEncoder.load(teacher_dir / "bi_encoder", manifest.max_length, cache_items, view)
        bm25 = Bm25Stats.load(teacher_dir / BM25_FILE)
        numerics = f"{runtime}-{'int8' if quantize == 'int8' else 'fp32'}"
        return cls(teacher_dir, bi, bm25, manifest, numerics)

    def inputs(self, queries: Sequence[str], pin_texts: Sequence[str]) -> StudentInputs:
        """Each distinct query and pin view is embedded once (and kept in the LRU)."""
        q = self.bi_encoder.embed(list(queries))
        p = self.bi_encoder.embed([self.bi_encoder.pin_view(t) for t in pin_texts])
        return pair_features(self.bm25, queries, pin_texts, q, p)

    def versions(self) -> dict[str, str]:
        """What the features depend on: a student's manifest records these, and one is only
        fed features whose versions equal its own."""
        return {
            "feature_set": FEATURE_SET_VERSION,
            "pair_features": ",".join(PAIR_FEATURES),
            "teacher_version": self.manifest.version,
            "bi_encoder": _digest(self.teacher_dir / "bi_encoder"),
            "bi_encoder_view": json.dumps(
                {
                    "budgets": self.manifest.bi_encoder_budgets,
                    "markers": self.manifest.bi_encoder_markers,
                },
                sort_keys=True,
            ),
            "bi_encoder_numerics": self.numerics,
            "bm25": self.bm25.digest(),
        }
