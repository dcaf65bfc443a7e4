"""Lexical evidence for the teacher: BM25 with frozen corpus statistics and query-term
coverage of the title and the whole pin text.

The statistics (document frequencies, mean length) are computed once on the training
pins and saved beside the weights, so the served teacher scores one pair at a time with
no corpus at hand, and gives the same number for the same pair whatever else is batched.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from serving.teacher.text import split_pin_text

_WORD = re.compile(r"[a-z0-9]+")
K1 = 1.2
B = 0.75

LEXICAL_FEATURES: tuple[str, ...] = (
    "bm25",
    "bm25_title",
    "cover_title",
    "cover_text",
    "cover_title_idf",
    "cover_title_fuzzy",
    "all_in_title",
    "bigram_title",
    "query_terms",
)


def stem(word: str) -> str:
    """A light plural/suffix folding: 'lamps' and 'lamp' match; cheap and predictable."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and word[-3] in "sxz":
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def terms(text: str) -> list[str]:
    return [stem(w) for w in _WORD.findall(text.lower())]


class Bm25Stats(BaseModel):
    """Frozen corpus statistics: document frequency per term, document count, mean length."""

    df: dict[str, int]
    docs: int
    mean_length: float

    @classmethod
    def fit(cls, pin_texts: Iterable[str]) -> Bm25Stats:
        df: Counter[str] = Counter()
        docs = 0
        total = 0
        for text in pin_texts:
            words = terms(text)
            df.update(set(words))
            total += len(words)
            docs += 1
        return cls(df=dict(df), docs=max(docs, 1), mean_length=max(total / max(docs, 1), 1.0))

    def idf(self, term: str) -> float:
        n = self.df.get(term, 0)
        return math.log(1.0 + (self.docs - n + 0.5) / (n + 0.5))

    def score(self, query_terms: Sequence[str], doc_terms: Sequence[str]) -> float:
        if not doc_terms:
            return 0.0
        counts = Counter(doc_terms)
        norm = K1 * (1.0 - B + B * len(doc_terms) / self.mean_length)
        total = 0.0
        for term in set(query_terms):
            tf = counts.get(term, 0)
            if tf:
                total += self.idf(term) * tf * (K1 + 1.0) / (tf + norm)
        return total

    def save(self, path: Path) -> None:
        # Sorted: the same statistics give the same bytes (students hash this file).
        path.write_text(json.dumps(self.model_dump(), sort_keys=True))

    def digest(self) -> str:
        """A short hash of the statistics themselves, whatever order a file lists them in."""
        canonical = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]

    @classmethod
    def load(cls, path: Path) -> Bm25Stats:
        return cls.model_validate_json(path.read_text())


def _bigrams(words: Sequence[str]) -> set[tuple[str, str]]:
    return set(zip(words, words[1:], strict=False))


def pair_features(stats: Bm25Stats, query: str, pin_text: str) -> list[float]:
    """The LEXICAL_FEATURES of one pair, in that order."""
    q = terms(query)
    fields = split_pin_text(pin_text)
    title = terms(fields.get("title", ""))
    text = terms(pin_text)
    if not q:
        return [0.0] * len(LEXICAL_FEATURES)
    qset = set(q)
    title_set, text_set = set(title), set(text)
    idfs = {t: stats.idf(t) for t in qset}
    in_title = [t for t in qset if t in title_set]
    fuzzy = [t for t in qset if t in title_set or any(t in w or w in t for w in title_set if w)]
    q_bigrams = _bigrams(q)
    return [
        stats.score(q, text),
        stats.score(q, title),
        len(in_title) / len(qset),
        sum(t in text_set for t in qset) / len(qset),
        sum(idfs[t] for t in in_title) / max(sum(idfs.values()), 1e-9),
        len(fuzzy) / len(qset),
        float(len(in_title) == len(qset)),
        len(q_bigrams & _bigrams(title)) / len(q_bigrams) if q_bigrams else 1.0,
        math.log1p(len(qset)),
    ]


def lexical_matrix(stats: Bm25Stats, queries: Sequence[str], pin_texts: Sequence[str]):
    return np.asarray(
        [pair_features(stats, q, p) for q, p in zip(queries, pin_texts, strict=True)],
        dtype=np.float32,
    ).reshape(len(queries), len(LEXICAL_FEATURES))
