"""The student: a small feed-forward network over precomputed query and pin embeddings and
pair features, distilled from the teacher's probabilities.

Trained with PyTorch; it serves from plain numpy (two or three matrix products a pair), in
process and in Triton alike, so the served student and the in-process one run the same
code and agree to float rounding. A student directory holds:

    student.npz      the weights, and the pair features' mean and scale
    manifest.json    `StudentManifest`: what it was trained on (training set table and
                     Iceberg snapshot, teacher version, feature versions), its settings,
                     and the metrics of its last evaluation
    bm25.json        the teacher's BM25 statistics its lexical features use

Inputs per pair: [q, p, q*p, |q-p|, standardized pair features] -> ReLU layers -> the
label scale's logits. Soft targets (the default) are the teacher's probabilities
(cross-entropy to them: the KL divergence up to a constant); hard targets are one label
per row (the teacher's argmax, or a human grade).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from serving.student.features import BM25_FILE, PAIR_FEATURES, FeatureMismatch, StudentInputs

MANIFEST = "manifest.json"
WEIGHTS = "student.npz"


class StudentError(RuntimeError):
    """A student could not be trained or loaded (names the directory or the data)."""


class StudentConfig(BaseModel):
    """How a student is trained."""

    hidden: list[int] = Field(default_factory=lambda: [256, 128])
    epochs: int = Field(default=30, ge=1)
    batch_size: int = Field(default=256, ge=1)
    lr: float = Field(default=2e-3, gt=0)
    weight_decay: float = Field(default=1e-4, ge=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    # "soft": the teacher's probabilities; "hard": one label per row.
    targets: Literal["soft", "hard"] = "soft"
    # Held out of training to pick the epoch (lowest validation loss).
    val_fraction: float = Field(default=0.1, ge=0, lt=1)
    patience: int = Field(default=5, ge=1)
    seed: int = 0


class StudentManifest(BaseModel):
    version: str
    scale: int
    hidden: list[int]
    pair_features: list[str]
    embedding_dim: int
    created_at: str
    # What it was trained on, so it can be rebuilt exactly.
    training_set: dict[str, object] = Field(default_factory=dict)
    teacher_version: str | None = None
    feature_versions: dict[str, str] = Field(default_factory=dict)
    config: dict[str, object] = Field(default_factory=dict)
    training: dict[str, object] = Field(default_factory=dict)
    metrics: dict[str, object] = Field(default_factory=dict)


@dataclass
class StudentPrediction:
    probs: np.ndarray  # (n, scale) float32, rows sum to 1
    score: np.ndarray  # (n,) expected grade mapped to [0, 1]
    label: np.ndarray  # (n,) 1..scale, the argmax


def _expand(inputs: StudentInputs, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    q, p = inputs.query_embedding, inputs.pin_embedding
    pair = (inputs.pair - mean) / scale
    return np.concatenate([q, p, q * p, np.abs(q - p), pair], axis=1).astype(np.float32)


class Student:
    """A trained student in numpy: `predict` is what Triton and the labeler run."""

    def __init__(
        self,
        manifest: StudentManifest,
        weights: list[tuple[np.ndarray, np.ndarray]],
        pair_mean: np.ndarray,
        pair_scale: np.ndarray,
    ) -> None:
        self.manifest = manifest
        self.weights = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in weights]
        self.pair_mean = np.asarray(pair_mean, np.float32)
        self.pair_scale = np.asarray(pair_scale, np.float32)

    @property
    def scale(self) -> int:
        return self.manifest.scale

    @property
    def version(self) -> str:
        return self.manifest.version

    def logits(self, inputs: StudentInputs) -> np.ndarray:
        x = _expand(inputs, self.pair_mean, self.pair_scale)
        for i, (w, b) in enumerate(self.weights):
            x = x @ w + b
            if i < len(self.weights) - 1:
                np.maximum(x, 0.0, out=x)
        return x

    def predict(self, inputs: StudentInputs) -> StudentPrediction:
        """Probabilities, score and label of each pair.

        Raises:
            FeatureMismatch: the embeddings' width is not the one the student learned.
        """
        width = inputs.query_embedding.shape[1] if len(inputs) else self.manifest.embedding_dim
        if width != self.manifest.embedding_dim:
            raise FeatureMismatch(
                f"student {self.version} reads {self.manifest.embedding_dim}-wide embeddings, "
                f"got {width}: compute features with its teacher's bi-encoder "
                f"({self.manifest.teacher_version})"
            )
        if not len(inputs):
            z = np.zeros((0, self.scale), np.float32)
            return StudentPrediction(z, np.zeros(0, np.float32), np.zeros(0, np.int32))
        logits = self.logits(inputs).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        grade = probs @ np.arange(1, self.scale + 1)
        return StudentPrediction(
            probs=probs.astype(np.float32),
            score=((grade - 1.0) / (self.scale - 1)).astype(np.float32),
            label=(probs.argmax(axis=1) + 1).astype(np.int32),
        )

    def check_features(self, versions: dict[str, str]) -> None:
        """Refuse features computed differently from the student's training features.

        Raises:
            FeatureMismatch: names the first differing version and both values.
        """
        for key, expected in self.manifest.feature_versions.items():
            got = versions.get(key)
            if got != expected:
                raise FeatureMismatch(
                    f"student {self.version} was trained on {key}={expected!r} but the "
                    f"features have {key}={got!r}: compute them with teacher "
                    f"{self.manifest.teacher_version}'s featurizer, or retrain the student"
                )

    def save(self, path: Path, bm25_file: Path | None = None) -> None:
        """Write the student directory (weights, manifest, and the BM25 statistics)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = {"pair_mean": self.pair_mean, "pair_scale": self.pair_scale}
        for i, (w, b) in enumerate(self.weights):
            arrays[f"w{i}"] = w
            arrays[f"b{i}"] = b
        np.savez(path / WEIGHTS, **arrays)
        if bm25_file is not None and Path(bm25_file) != path / BM25_FILE:
            shutil.copyfile(bm25_file, path / BM25_FILE)
        self.write_manifest(path)

    def write_manifest(self, path: Path) -> None:
        (Path(path) / MANIFEST).write_text(self.manifest.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Student:
        """Load a student directory.

        Raises:
            StudentError: `path` holds no student (names what is missing and the fix).
        """
        path = Path(path)
        for name in (MANIFEST, WEIGHTS):
            if not (path / name).is_file():
                raise StudentError(
                    f"{path} is not a student directory (no {name}); "
                    "train one with `freshlabel student train --out DIR`"
                )
        manifest = StudentManifest.model_validate_json((path / MANIFEST).read_text())
        with np.load(path / WEIGHTS) as data:
            layers = len(manifest.hidden) + 1
            weights = [(data[f"w{i}"], data[f"b{i}"]) for i in range(layers)]
            return cls(manifest, weights, data["pair_mean"], data["pair_scale"])


def _targets(
    scale: int, probs: np.ndarray | None, labels: np.ndarray | None, mode: str
) -> np.ndarray:
    if mode == "soft":
        if probs is None:
            raise StudentError("soft targets need the teacher's probabilities; none given")
        targets = np.asarray(probs, np.float32)
        if targets.shape[1] != scale:
            raise StudentError(f"probabilities have {targets.shape[1]} classes, not {scale}")
        return targets / targets.sum(axis=1, keepdims=True)
    if labels is None:
        if probs is None:
            raise StudentError("hard targets need labels or probabilities; none given")
        labels = np.asarray(probs).argmax(axis=1) + 1
    labels = np.asarray(labels, np.int64)
    if labels.min() < 1 or labels.max() > scale:
        raise StudentError(f"labels must be 1..{scale}; got {labels.min()}..{labels.max()}")
    return np.eye(scale, dtype=np.float32)[labels - 1]


def train_student(
    inputs: StudentInputs,
    scale: int,
    probs: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    config: StudentConfig | None = None,
    version: str | None = None,
    progress: bool = False,
) -> Student:
    """Distill a student from teacher probabilities (or fit it to hard labels).

    Args:
        inputs: the training pairs' features.
        scale: the label scale (4 for 1..4).
        probs: (n, scale) teacher probabilities (soft targets; argmax for hard ones).
        labels: (n,) labels 1..scale for hard targets (human grades, or the teacher's).
        config: training settings (defaults: `StudentConfig()`).
        version: the student's name (default: `student-<UTC time>`).
        progress: show a progress bar over epochs on stderr.

    Returns:
        The student with the epoch of lowest validation loss; `manifest.training` holds
        the losses and the epoch.

    Raises:
        StudentError: no rows, or targets that do not fit the scale.
    """
    import torch

    from infra.progress import progress_bar

    config = config or StudentConfig()
    n = len(inputs)
    if n < 2:
        raise StudentError(f"a student needs at least 2 training pairs, got {n}")
    targets = _targets(scale, probs, labels, config.targets)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    order = rng.permutation(n)
    n_val = int(round(n * config.val_fraction)) if n >= 20 else 0
    val_rows, train_rows = order[:n_val], order[n_val:]

    pair = inputs.pair[train_rows]
    mean = pair.mean(axis=0)
    spread = pair.std(axis=0)
    spread = np.where(spread > 1e-6, spread, 1.0).astype(np.float32)
    x_all = torch.from_numpy(_expand(inputs, mean.astype(np.float32), spread))
    y_all = torch.from_numpy(targets)
    dim = inputs.query_embedding.shape[1]

    layers: list[torch.nn.Module] = []
    width = x_all.shape[1]
    for hidden in config.hidden:
        layers += [
            torch.nn.Linear(width, hidden),
            torch.nn.ReLU(),
            torch.nn.Dropout(config.dropout),
        ]
        width = hidden
    layers.append(torch.nn.Linear(width, scale))
    net = torch.nn.Sequential(*layers)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps = config.epochs * math.ceil(len(train_rows) / config.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=steps)

    def loss_of(rows: np.ndarray) -> float:
        net.eval()
        with torch.no_grad():
            logp = torch.log_softmax(net(x_all[rows]), dim=1)
            return float(-(y_all[rows] * logp).sum(dim=1).mean())

    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    history: list[dict[str, float]] = []
    bar = progress_bar(range(config.epochs), desc="student", unit="epoch", show=progress)
    for epoch in bar:
        net.train()
        shuffled = train_rows[rng.permutation(len(train_rows))]
        for start in range(0, len(shuffled), config.batch_size):
            rows = shuffled[start : start + config.batch_size]
            logp = torch.log_softmax(net(x_all[rows]), dim=1)
            loss = -(y_all[rows] * logp).sum(dim=1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        train_loss = loss_of(train_rows)
        val_loss = loss_of(val_rows) if n_val else train_loss
        history.append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if best is None or val_loss < best[0] - 1e-6:
            state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            best = (val_loss, epoch + 1, state)
        elif epoch + 1 - best[1] >= config.patience:
            break
    assert best is not None
    net.load_state_dict(best[2])
    linears = [m for m in net if isinstance(m, torch.nn.Linear)]
    weights = [
        (m.weight.detach().numpy().T.copy(), m.bias.detach().numpy().copy()) for m in linears
    ]
    now = datetime.now(UTC)
    manifest = StudentManifest(
        version=version or f"student-{now:%Y%m%d%H%M%S}",
        scale=scale,
        hidden=list(config.hidden),
        pair_features=list(PAIR_FEATURES),
        embedding_dim=dim,
        created_at=now.isoformat(),
        config=json.loads(config.model_dump_json()),
        training={
            "rows": n,
            "train_rows": len(train_rows),
            "val_rows": n_val,
            "best_epoch": best[1],
            "best_val_loss": best[0],
            "history": history,
        },
    )
    return Student(manifest, weights, mean, spread)
