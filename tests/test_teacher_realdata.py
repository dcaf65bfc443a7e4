"""The CrowdFlower judgements through the teacher's data path (skips loudly without them)."""

from __future__ import annotations

import numpy as np
import pytest

from serving.teacher.data import load_pairs, query_folds
from serving.teacher.evaluate import bm25_scores, quantile_labels
from serving.teacher.metrics import ndcg_at, qwk
from tests.conftest import shared_data

pytestmark = pytest.mark.realdata


def test_crowdflower_preset_reads_the_real_judgements() -> None:
    pairs = load_pairs(shared_data("crowdflower/train.parquet"), "crowdflower")
    frame = pairs.frame
    assert pairs.scale == 4 and len(frame) == 8025 and frame["query"].nunique() == 206
    assert np.bincount(pairs.labels)[1:].tolist() == [606, 1184, 1401, 4834]
    assert frame["pin_text"].str.startswith("title: ").all()
    # A quarter of the products have no description: the field is skipped, not filled.
    assert (
        ~frame["pin_text"].str.contains(" | description: ", regex=False)
    ).mean() == pytest.approx(0.245, abs=0.01)
    # Rater agreement weights average to one.
    assert frame["weight"].mean() == pytest.approx(1.0)
    assert pairs.sha256 == "95022cf367c5bf6fa78a97ef29b8a8b17e2a0f8ba6fd21b4995b30dfbc0e0b7e"


def test_bm25_baseline_on_a_query_disjoint_fold() -> None:
    pairs = load_pairs(shared_data("crowdflower/train.parquet"), "crowdflower")
    fold = query_folds(pairs.queries, 5, seed=1)
    test = fold == 0
    queries = [q for q, t in zip(pairs.queries, test, strict=True) if t]
    texts = [p for p, t in zip(pairs.pin_texts, test, strict=True) if t]
    scores = bm25_scores(queries, texts)
    labels = pairs.labels[test]
    counts = np.bincount(pairs.labels[~test], minlength=5)[1:]
    # Far from perfect, far better than chance: the floor the teacher has to clear.
    assert 0.7 < ndcg_at(labels, scores, queries) < 0.95
    assert 0.1 < qwk(labels, quantile_labels(scores, counts), 4) < 0.6
