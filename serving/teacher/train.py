"""Fine-tune the cross-encoder and fit the stacker: `freshlabel teacher train`.

Recipe (why each step is there):
- query-grouped validation split: the teacher labels queries it never saw, so early
  stopping and the stacker must be judged on unseen queries too;
- length-bucketed batches: on CPU, padding costs more than anything else;
- early stopping on validation nDCG@10 + QWK (not log-loss: a head that stays near the
  label prior wins on log-loss while ranking poorly); the best epoch's weights are kept;
- the two-stage stacker (serving/teacher/stacker.py): bi-encoder + BM25/coverage
  features fitted on every row, the cross-encoder's grade added on the validation rows,
  which the cross-encoder never trained on; QWK thresholds on unseen queries.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import field_validator

from infra.config import TeacherRecipe
from infra.progress import progress_bar
from serving.teacher.data import LabeledPairs, query_folds
from serving.teacher.encoders import (
    BiEncoder,
    CrossEncoder,
    cached_logits,
    collate_states,
    frozen_states,
    top_logits,
)
from serving.teacher.lexical import Bm25Stats, lexical_matrix
from serving.teacher.metrics import label_metrics, ndcg_at, qwk
from serving.teacher.model import (
    MANIFEST,
    TeacherManifest,
    cross_encoder_features,
    feature_names,
)
from serving.teacher.stacker import apply_thresholds, expected_grade, fit_stacker, fit_thresholds
from serving.teacher.text import PinView, check_budgets, check_fields, english_stopwords

log = logging.getLogger(__name__)


class TrainConfig(TeacherRecipe):
    """A teacher's training recipe: `TeacherRecipe` (infra/config.py, what
    `settings.teacher` sets) plus what only a training run chooses."""

    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    # Rows raters disagreed on (relevance_variance) count less, when the data has it.
    use_weights: bool = True
    uses_bi_encoder: bool = True
    # The bi-encoder reads the fields' words without `title: ... | ` markers: it is
    # zero-shot and never learned them (docs/teacher.md, "Send what you use").
    bi_encoder_markers: bool = False
    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: Literal["auto", "on", "off"] = "auto"
    # Small runs for tests and quick teachers: stop after this many optimizer steps.
    max_steps: int | None = None

    @field_validator("bi_encoder_budgets")
    @classmethod
    def _known_fields(cls, budgets: dict[str, int]) -> dict[str, int]:
        return dict(check_budgets(budgets))

    @field_validator("cross_encoder_stopword_fields")
    @classmethod
    def _known_stopword_fields(cls, fields: list[str]) -> list[str]:
        return list(check_fields(fields))

    def bi_encoder_view(self) -> PinView:
        """What the bi-encoder of this recipe reads of a pin text."""
        return PinView(self.bi_encoder_budgets, self.bi_encoder_markers)

    def cross_encoder_view(self) -> PinView:
        """What the cross-encoder of this recipe reads of a pin text."""
        fields = tuple(self.cross_encoder_stopword_fields)
        stopwords = english_stopwords() if fields else frozenset()
        return PinView(stopwords=stopwords, stopword_fields=fields)

    @classmethod
    def from_settings(cls, teacher: TeacherRecipe, **overrides: Any) -> TrainConfig:
        """The training recipe of `teacher` (settings.teacher), with `overrides` on top.

        Args:
            teacher: the teacher settings (epochs, batch size, learning rate, ...).
            **overrides: TrainConfig fields that replace the settings' values.

        Returns:
            The config.
        """
        values = teacher.model_dump(include=set(TeacherRecipe.model_fields))
        return cls(**{**values, **overrides})


@dataclass
class PairCache:
    """Per-row results that do not depend on what is trained: the frozen layers' output
    and the zero-shot bi-encoder cosine. Computed once, shared by epochs and CV folds."""

    start_layer: int
    frozen: list[torch.Tensor] | None
    bi_cosine: np.ndarray | None

    def subset(self, mask: np.ndarray) -> PairCache:
        rows = np.flatnonzero(mask)
        return PairCache(
            start_layer=self.start_layer,
            frozen=[self.frozen[i] for i in rows] if self.frozen is not None else None,
            bi_cosine=self.bi_cosine[rows] if self.bi_cosine is not None else None,
        )


def start_layer(config: TrainConfig) -> int:
    return max(0, config.cross_encoder_layers - config.trainable_layers)


def _cache_file(pairs: LabeledPairs, config: TrainConfig, first: int, cache_dir: Path) -> Path:
    digest = hashlib.sha256()
    for query, text in zip(pairs.queries, pairs.pin_texts, strict=True):
        digest.update(query.encode() + b"\0" + text.encode() + b"\1")
    bi = f"bi{config.uses_bi_encoder:d}"
    if config.uses_bi_encoder and config.bi_encoder_budgets:
        budgets = sorted(config.bi_encoder_budgets.items())
        bi += "-" + "-".join(f"{field}{words}" for field, words in budgets)
    if config.uses_bi_encoder and not config.bi_encoder_markers:
        bi += "-plain"
    cross = "".join(f"-nostop{field}" for field in config.cross_encoder_stopword_fields)
    key = f"{digest.hexdigest()[:16]}-len{config.max_length}-from{first}{cross}-{bi}"
    return cache_dir / f"{key}.pt"


def build_cache(
    pairs: LabeledPairs,
    config: TrainConfig,
    progress: Callable[[str], None] = log.info,
    cache_dir: Path | None = None,
) -> PairCache:
    """Frozen-layer outputs and bi-encoder cosines for every row. With `cache_dir`, kept
    on disk keyed by the exact rows and settings, so reruns and CV skip the pass."""
    started = time.monotonic()
    first = start_layer(config)
    path = _cache_file(pairs, config, first, cache_dir) if cache_dir else None
    if path is not None and path.is_file():
        saved = torch.load(path, weights_only=False)
        progress(f"frozen-layer and bi-encoder cache read from {path}")
        return PairCache(**saved)
    frozen = None
    if first > 0:
        base = CrossEncoder.new(
            pairs.scale, layers=config.cross_encoder_layers, pin_view=config.cross_encoder_view()
        )
        ids = base.encode(pairs.queries, pairs.pin_texts, config.max_length)
        frozen = frozen_states(base, ids, first, config.infer_batch_size)
    bi_cosine = None
    if config.uses_bi_encoder:
        bi = BiEncoder.load(max_length=config.max_length, pin_view=config.bi_encoder_view())
        bi_cosine = bi.cosine(pairs.queries, pairs.pin_texts)
    progress(
        f"cached frozen layers 0..{first - 1} and bi-encoder cosine for {len(pairs.frame)} "
        f"rows in {time.monotonic() - started:.0f}s"
    )
    cache = PairCache(start_layer=first, frozen=frozen, bi_cosine=bi_cosine)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"start_layer": first, "frozen": frozen, "bi_cosine": bi_cosine}, tmp)
        tmp.replace(path)
    return cache


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(config: TrainConfig) -> tuple[torch.device, str, bool]:
    """Device, autocast precision and gradient checkpointing this run can actually use.
    CPU: fp32 (bf16 autocast is slower without AMX) and no checkpointing (memory is not
    the limit there; it would only add recomputation)."""
    name = config.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    precision = config.precision
    if precision == "auto":
        if device.type == "cuda":
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            precision = "fp32"
    checkpointing = config.gradient_checkpointing == "on" or (
        config.gradient_checkpointing == "auto" and device.type == "cuda"
    )
    return device, precision, checkpointing


def warmup_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup, then linear decay: optimizer step s (from 0) runs at
    lr * (s + 1) / warmup up to the peak, reached at step warmup - 1 and held one more
    step, then at lr * (total_steps - s) / (total_steps - warmup), down to
    lr / (total_steps - warmup) at the last step.

    It is transformers' warmup-stable-decay schedule with a one-step stable phase, started
    one step in (`last_epoch=0`), so that no step runs at a learning rate of 0.

    Args:
        optimizer: the optimizer, at its peak learning rate.
        total_steps: optimizer steps of the whole run.
        warmup: steps of the warmup (at least 1).

    Returns:
        The scheduler; call `step()` after every optimizer step.
    """
    # Imported here: serving.teacher.encoders (imported above) sets transformers' offline
    # mode before transformers is first imported.
    from transformers import get_wsd_schedule

    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]  # a scheduler started past step 0 reads this
    return get_wsd_schedule(
        optimizer,
        num_warmup_steps=warmup,
        num_stable_steps=1,
        num_decay_steps=max(0, total_steps - warmup),
        decay_type="linear",
        last_epoch=0,
    )


def bucketed_batches(lengths: list[int], batch_size: int, rng: np.random.Generator):
    """Shuffled batches of similar-length rows: random order, little padding."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def ranking_quality(logits: np.ndarray, val: LabeledPairs) -> dict[str, float]:
    """Validation nDCG@10 of the expected grade and QWK with thresholds fitted on it."""
    probs = torch.softmax(torch.from_numpy(logits).double(), 1).numpy()
    grade = expected_grade(probs)
    cuts = fit_thresholds(grade, val.labels, val.scale)
    return {
        "val_ndcg10": ndcg_at(val.labels, grade, val.queries),
        "val_qwk": qwk(val.labels, apply_thresholds(grade, cuts), val.scale),
    }


def weighted_log_loss(logits: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> float:
    logp = torch.log_softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    return float(-(logp[np.arange(len(labels)), labels - 1] * weights).sum() / weights.sum())


def finetune_cross_encoder(
    ce: CrossEncoder,
    train: LabeledPairs,
    val: LabeledPairs,
    config: TrainConfig,
    progress: Callable[[str], None],
    train_cache: PairCache | None = None,
    val_cache: PairCache | None = None,
) -> tuple[np.ndarray, list[dict[str, float]], dict[str, float]]:
    """Train in place; returns the best epoch's validation logits, per-epoch history and
    timings. The model ends holding the best epoch's weights. With caches (frozen lower
    layers), only the top `trainable_layers` run forward and backward."""
    device, precision, checkpointing = resolve_device(config)
    # transformers wraps .to() in a decorator whose signature mypy reads as (PreTrainedModel).
    model = ce.model.to(device)  # type: ignore[arg-type]
    first = train_cache.start_layer if train_cache and train_cache.frozen is not None else 0
    if first > 0:
        for name, param in model.named_parameters():
            frozen_layer = any(name.startswith(f"bert.encoder.layer.{i}.") for i in range(first))
            param.requires_grad = not (name.startswith("bert.embeddings.") or frozen_layer)
    if checkpointing:
        model.gradient_checkpointing_enable()
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    autocast_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if first > 0:
        assert train_cache is not None and train_cache.frozen is not None
        states = train_cache.frozen
        lengths = [x.shape[0] for x in states]
        ids: list[list[int]] = []
    else:
        ids = ce.encode(train.queries, train.pin_texts, config.max_length)
        lengths = [len(x) for x in ids]
    labels = torch.tensor(train.labels - 1)
    weights = torch.tensor(
        train.frame["weight"].to_numpy() if config.use_weights else np.ones(len(lengths)),
        dtype=torch.float32,
    )
    steps_per_epoch = math.ceil(len(lengths) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    no_decay = ("bias", "LayerNorm.weight")
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for n, p in trainable if not n.endswith(no_decay)],
            "weight_decay": config.weight_decay,
        },
        {"params": [p for n, p in trainable if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    schedule = warmup_schedule(
        optimizer, total_steps, max(1, int(total_steps * config.warmup_fraction))
    )
    rng = np.random.default_rng(config.seed)
    val_weights = val.frame["weight"].to_numpy() if config.use_weights else np.ones(len(val.frame))

    def validation_logits() -> np.ndarray:
        if first > 0 and val_cache is not None and val_cache.frozen is not None:
            return cached_logits(model, val_cache.frozen, first, config.infer_batch_size)
        return ce.logits(val.queries, val.pin_texts, config.max_length, config.infer_batch_size)

    history: list[dict[str, float]] = []
    best_score, best_state, best_logits = -math.inf, None, None
    step, pairs_seen, train_seconds, stale = 0, 0, 0.0, 0
    bar = progress_bar(total=total_steps, desc="train", unit="step")
    for epoch in range(1, config.epochs + 1):
        model.train()
        started = time.monotonic()
        for batch in bucketed_batches(lengths, config.batch_size, rng):
            if step >= total_steps:
                break
            with torch.autocast(
                device.type,
                dtype=autocast_dtype or torch.float32,
                enabled=autocast_dtype is not None,
            ):
                if first > 0:
                    hidden, mask = collate_states([states[i] for i in batch])
                    logits = top_logits(model, hidden.to(device), mask.to(device), first)
                else:
                    inputs = {
                        k: v.to(device) for k, v in ce.collate([ids[i] for i in batch]).items()
                    }
                    logits = model(**inputs).logits
            per_row = torch.nn.functional.cross_entropy(
                logits.float(), labels[batch].to(device), reduction="none"
            )
            w = weights[batch].to(device)
            loss = (per_row * w).sum() / w.sum()
            params = [p for _, p in trainable]
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            schedule.step()
            step += 1
            pairs_seen += len(batch)
            bar.update(1)
            if step % 10 == 0 and not bar.disable:  # .item() waits for the device
                bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4f}", refresh=False)
            if step % 50 == 0 and bar.disable:  # a terminal has the bar instead
                elapsed = train_seconds + time.monotonic() - started
                progress(
                    f"epoch {epoch} step {step}/{total_steps} loss {loss.item():.4f} "
                    f"{pairs_seen / elapsed:.1f} pairs/s"
                )
        train_seconds += time.monotonic() - started
        val_logits = validation_logits()
        val_loss = weighted_log_loss(val_logits, val.labels, val_weights)
        ranking = ranking_quality(val_logits, val)
        history.append({"epoch": epoch, "steps": step, "val_log_loss": val_loss, **ranking})
        progress(
            f"epoch {epoch}: validation log-loss {val_loss:.4f}, "
            f"nDCG@10 {ranking['val_ndcg10']:.4f}, QWK {ranking['val_qwk']:.4f}"
        )
        # Selected on ranking and kappa, not log-loss: a barely trained head near the label
        # prior wins on log-loss while ranking no better than chance.
        score = ranking["val_ndcg10"] + ranking["val_qwk"]
        if score > best_score + 1e-4:
            best_score, best_logits, stale = score, val_logits, 0
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            stale += 1
            if stale > config.patience:
                progress(f"early stop after epoch {epoch}")
                break
        if step >= total_steps:
            break
    bar.close()
    assert best_state is not None and best_logits is not None
    if checkpointing:
        model.gradient_checkpointing_disable()
    for param in model.parameters():
        param.requires_grad = True
    model.load_state_dict(best_state)
    model.to("cpu").eval()
    timings = {
        "train_seconds": train_seconds,
        "train_pairs": float(pairs_seen),
        "train_pairs_per_s": pairs_seen / max(train_seconds, 1e-9),
    }
    return best_logits, history, timings


def subset(pairs: LabeledPairs, mask: np.ndarray) -> LabeledPairs:
    return pairs.model_copy(update={"frame": pairs.frame[mask].reset_index(drop=True)})


def validation_mask(pairs: LabeledPairs, config: TrainConfig) -> np.ndarray:
    folds = max(2, round(1.0 / config.val_fraction))
    return query_folds(pairs.queries, folds, config.seed) == 0


def train_teacher(
    pairs: LabeledPairs,
    out: Path,
    config: TrainConfig,
    version: str | None = None,
    cache: PairCache | None = None,
    progress: Callable[[str], None] = log.info,
    cache_dir: Path | None = None,
) -> TeacherManifest:
    """Train a complete teacher into `out` (replaced if present). `cache` (rows aligned
    with `pairs`) is built here when not given; cross-validation passes its own."""
    started = time.monotonic()
    seed_everything(config.seed)
    is_val = validation_mask(pairs, config)
    train, val = subset(pairs, ~is_val), subset(pairs, is_val)
    if len(val.frame) == 0 or len(train.frame) == 0:
        raise ValueError(
            f"{pairs.source}: {pairs.frame['query'].nunique()} queries are too few for a "
            "query-grouped validation split; label more queries"
        )
    device, precision, checkpointing = resolve_device(config)
    progress(
        f"training on {len(train.frame)} rows / {train.frame['query'].nunique()} queries, "
        f"validating on {len(val.frame)} / {val.frame['query'].nunique()} "
        f"(device {device}, {precision}, checkpointing {checkpointing}, "
        f"top {config.trainable_layers} layers trained)"
    )
    cache_seconds = 0.0
    if cache is None:
        cache_started = time.monotonic()
        cache = build_cache(pairs, config, progress, cache_dir)
        cache_seconds = time.monotonic() - cache_started
    ce = CrossEncoder.new(
        pairs.scale, layers=config.cross_encoder_layers, pin_view=config.cross_encoder_view()
    )
    val_logits, history, timings = finetune_cross_encoder(
        ce, train, val, config, progress, cache.subset(~is_val), cache.subset(is_val)
    )
    timings["cache_seconds"] = cache_seconds
    bm25 = Bm25Stats.fit(pairs.pin_texts)
    bi = (
        BiEncoder.load(max_length=config.max_length, pin_view=config.bi_encoder_view())
        if config.uses_bi_encoder
        else None
    )
    names = feature_names(pairs.scale, bi is not None)
    # Features nothing was trained for, on every row (the stacker's base stage) ...
    untrained = [lexical_matrix(bm25, pairs.queries, pairs.pin_texts)]
    if bi is not None:
        cosine = cache.bi_cosine
        if cosine is None:
            cosine = bi.cosine(pairs.queries, pairs.pin_texts)
        untrained.insert(0, np.asarray(cosine)[:, None])
    ce_width = pairs.scale + 1
    x_all = np.column_stack([np.zeros((len(pairs.frame), ce_width)), *untrained])
    # ... and the cross-encoder's, on the validation rows it never trained on.
    x_val = x_all[is_val].copy()
    x_val[:, :ce_width] = cross_encoder_features(val_logits)
    weights = pairs.frame["weight"].to_numpy() if config.use_weights else None
    stacker = fit_stacker(
        x_val,
        val.labels,
        np.asarray(val.queries),
        names,
        pairs.scale,
        base_features=names[ce_width:],
        top_features=["ce_grade"],
        x_all=x_all,
        labels_all=pairs.labels,
        weights_val=weights[is_val] if weights is not None else None,
        weights_all=weights,
    )
    # Cross-encoder alone on validation (argmax and with its own thresholds), for the record.
    ce_probs = torch.softmax(torch.from_numpy(val_logits).double(), 1).numpy()
    ce_grade = expected_grade(ce_probs)
    ce_cuts = fit_thresholds(ce_grade, val.labels, pairs.scale)
    stacked = stacker.probs(x_val)
    metrics = {
        # In-sample for the stacker (fitted on these rows): optimistic; use `teacher eval`.
        "teacher": label_metrics(
            val.labels, stacker.labels(stacked), expected_grade(stacked), val.queries, pairs.scale
        ),
        "validation_rows": len(val.frame),
        "validation_queries": int(val.frame["query"].nunique()),
        "cross_encoder_argmax": label_metrics(
            val.labels, ce_probs.argmax(1) + 1, ce_grade, val.queries, pairs.scale
        ),
        "cross_encoder_thresholds": label_metrics(
            val.labels, apply_thresholds(ce_grade, ce_cuts), ce_grade, val.queries, pairs.scale
        ),
        "history": history,
    }
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ce.save(out / "cross_encoder")
    if bi is not None:
        bi.save(out / "bi_encoder")
    bm25.save(out / "bm25.json")
    stacker.save(out / "stacker.json")
    timings["total_seconds"] = time.monotonic() - started
    manifest = TeacherManifest(
        version=version or f"{out.name}-{pairs.sha256[:8]}-{datetime.now(UTC):%Y%m%d%H%M%S}",
        scale=pairs.scale,
        max_length=config.max_length,
        uses_bi_encoder=bi is not None,
        bi_encoder_budgets=config.bi_encoder_budgets if bi is not None else {},
        bi_encoder_markers=config.bi_encoder_markers if bi is not None else True,
        cross_encoder_stopword_fields=config.cross_encoder_stopword_fields,
        cross_encoder_stopwords=sorted(ce.pin_view.stopwords),
        created_at=datetime.now(UTC).isoformat(),
        data={
            "source": pairs.source,
            "sha256": pairs.sha256,
            "rows": len(pairs.frame),
            "queries": int(pairs.frame["query"].nunique()),
            "label_counts": {
                str(k): int(v) for k, v in sorted(pairs.frame["label"].value_counts().items())
            },
        },
        settings={
            **config.model_dump(),
            "resolved_device": str(device),
            "resolved_precision": precision,
            "resolved_gradient_checkpointing": checkpointing,
            "torch_threads": torch.get_num_threads(),
        },
        metrics=metrics,
        timings=timings,
        features=names,
    )
    (out / MANIFEST).write_text(manifest.model_dump_json(indent=2))
    progress(f"teacher {manifest.version} written to {out} in {timings['total_seconds']:.0f}s")
    return manifest
