"""The score cache's query normalization changes no label: for varied text, the teacher's
readers of the query (MiniLM's tokenizer, the lexical features) see the raw and the
normalized query identically; and what they do not both ignore keeps its own key."""

from __future__ import annotations

import random

import pytest

from serving.labeler.cache import cache_key, input_hash, normalize_query
from serving.teacher.encoders import base_model_dir, load_tokenizer
from serving.teacher.lexical import terms

VARIED = [
    "Oak Desk",
    "  oak   desk  ",
    "OAK\tDESK\n",
    "oak\u00a0desk",
    "oak\u2003desk\u3000lamp",
    "oak\u2028desk\u2029",
    "CAFÉ Crème brûlée",
    "ΟΔΟΣ ΣΟΦΙΑΣ",
    "İstanbul KELVIN \u212a",
    "Straße GROẞE",
    "ﬁsh ﬂat",
    "東京 タワー Ｔｏｋｙｏ",
    "oak\x1fdesk",
    "oak\x0bdesk\x0c",
    "oak\x85desk",
    "zero\u200bwidth\u200dJoiner",
    "emoji 🌲 Tree 🪵",
    "Ångström \u212b",
    "tab\t\tsep  and\r\nnewline",
    "",
    "   ",
]


def _random_text(rng: random.Random) -> str:
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " \t\n\r\u00a0\u2000\u2009\u3000\x0b\x0c\x1c\x1f\x85\u200b",
        "àáâãäåçèéêëìíîïñòóôõöùúûüýÿÀÁÂÃÄÅÇÈÉÊËÌÍÎÏÑÒÓÔÕÖÙÚÛÜÝßẞΣσςİıſ\u212a\u212b",
        "中文日本語한국어ÆæØøŒœĲĳǅǈǋ",
        "\u0301\u0308\u0327-_.,;:!?'\"()&|/",
    ]
    return "".join(rng.choice(rng.choice(pools)) for _ in range(rng.randint(0, 24)))


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(base_model_dir())


def test_normalized_and_raw_queries_are_read_identically(tokenizer) -> None:
    rng = random.Random(7)
    texts = VARIED + [_random_text(rng) for _ in range(400)]
    normalized = [normalize_query(t) for t in texts]
    raw_ids = tokenizer(texts)["input_ids"]
    norm_ids = tokenizer(normalized)["input_ids"]
    for text, norm, a, b in zip(texts, normalized, raw_ids, norm_ids, strict=True):
        assert a == b, f"tokenizer reads {text!r} and {norm!r} differently"
        assert terms(text) == terms(norm), f"lexical terms of {text!r} and {norm!r} differ"
    # As the second segment of a pair too (how the cross-encoder reads it).
    pin = "title: oak desk | description: solid oak"
    pairs_raw = tokenizer(texts, [pin] * len(texts))["input_ids"]
    assert pairs_raw == tokenizer(normalized, [pin] * len(texts))["input_ids"]


def test_case_and_whitespace_variants_share_one_key() -> None:
    variants = ["Oak Desk", "  oak   desk ", "OAK\tDESK\n", "oak\u00a0desk", "Oak\u3000Desk"]
    keys = {cache_key(q, "p1", input_hash(q, "title: desk"), "v1") for q in variants}
    hashes = {input_hash(q, "title: desk") for q in variants}
    assert len(keys) == 1 and len(hashes) == 1
    assert normalize_query("ΟΔΟΣ") == "οδοσ"  # the tokenizer's sigma, not str.lower()'s "ς"


def test_what_the_teacher_reads_differently_keeps_its_own_key(tokenizer) -> None:
    # Accents: the tokenizer strips them but the lexical features split on them.
    assert terms("café") != terms("cafe")
    # A control character the tokenizer deletes (one word) where str.split() would split.
    assert tokenizer(["oak\x1fdesk"])["input_ids"] != tokenizer(["oak desk"])["input_ids"]
    for a, b in (("café", "cafe"), ("oak\x1fdesk", "oak desk"), ("oak desk", "desk oak")):
        assert cache_key(a, "p1", "h", "v1") != cache_key(b, "p1", "h", "v1")
