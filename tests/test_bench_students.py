"""The pure pieces of benchmarks/bench_students.py: the bootstrap interval of a gap, the
metrics it recomputes, the splits, and the world rows (point-in-time pin text, true grade,
query metadata) of a tiny world. No teacher, no stack."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

from benchmarks.bench_students import (
    bootstrap_gap,
    collect_world_rows,
    freshness_splits,
    per_query_ndcg,
    qwk_from_confusion,
    scaling_splits,
)
from infra.config import Settings
from schemas import Impression, PinCaption, PinContent
from serving.teacher.metrics import ndcg_at, qwk
from serving.teacher.text import split_pin_text
from streams.generator.timeline import Timeline


def synthetic(seed: int = 1, queries: int = 120, per_query: int = 12):
    """Truth 1..4 over many queries; B's score is the truth plus small noise, A's plus
    large noise: B ranks and labels better, by a known direction."""
    rng = np.random.default_rng(seed)
    n = queries * per_query
    names = np.repeat([f"q{i}" for i in range(queries)], per_query)
    truth = rng.integers(1, 5, size=n)
    a_score = truth + rng.normal(0, 1.5, n)
    b_score = truth + rng.normal(0, 0.3, n)
    a_label = np.clip(np.rint(a_score), 1, 4).astype(int)
    b_label = np.clip(np.rint(b_score), 1, 4).astype(int)
    return truth, names.tolist(), a_label, a_score, b_label, b_score


def test_qwk_from_confusion_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 5, 500)
    predicted = np.clip(truth + rng.integers(-1, 2, 500), 1, 4)
    confusion = np.zeros((4, 4))
    np.add.at(confusion, (truth - 1, predicted - 1), 1)
    assert qwk_from_confusion(confusion) == pytest.approx(qwk(truth, predicted, 4), abs=1e-12)
    stacked = qwk_from_confusion(np.stack([confusion, confusion.T]))
    assert isinstance(stacked, np.ndarray) and stacked.shape == (2,)
    assert stacked[1] == pytest.approx(qwk(predicted, truth, 4), abs=1e-12)


def test_per_query_ndcg_mean_is_ndcg_at() -> None:
    truth, names, _, a_score, _, _ = synthetic(queries=40)
    truth[:12] = 1  # a query with no ideal gain: skipped by both
    index = np.unique(names, return_inverse=True)[1]
    values = per_query_ndcg(truth, a_score, index, 40)
    assert np.isnan(values).sum() == 1
    assert np.nanmean(values) == pytest.approx(ndcg_at(truth, a_score, names, 10), abs=1e-12)


def test_bootstrap_finds_a_known_gap_and_is_seeded() -> None:
    truth, names, a_label, a_score, b_label, b_score = synthetic()
    gap = bootstrap_gap(truth, names, a_label, a_score, b_label, b_score, resamples=400, seed=3)
    assert gap["queries"] == 120 and gap["rows"] == len(truth)
    for metric in ("ndcg10", "qwk"):
        g = gap[metric]
        lo, hi = g["ci95"]
        assert 0 < lo <= g["gap"] <= hi, (metric, g)
        assert g["share_le_0"] == 0.0
    # The point estimates are the plain metrics.
    assert gap["ndcg10"]["a"] == pytest.approx(ndcg_at(truth, a_score, names, 10), abs=1e-4)
    assert gap["qwk"]["b"] == pytest.approx(qwk(truth, b_label, 4), abs=1e-4)
    # Same seed, same interval; the reverse comparison mirrors it.
    again = bootstrap_gap(truth, names, a_label, a_score, b_label, b_score, resamples=400, seed=3)
    assert again == gap
    reverse = bootstrap_gap(truth, names, b_label, b_score, a_label, a_score, resamples=400, seed=3)
    assert reverse["qwk"]["gap"] == -gap["qwk"]["gap"]
    assert reverse["qwk"]["ci95"] == pytest.approx([-gap["qwk"]["ci95"][1], -gap["qwk"]["ci95"][0]])


def test_bootstrap_of_no_gap_covers_zero() -> None:
    truth, names, a_label, a_score, _, _ = synthetic(seed=5)
    same = bootstrap_gap(truth, names, a_label, a_score, a_label, a_score, resamples=200)
    assert same["ndcg10"]["gap"] == 0 and same["ndcg10"]["ci95"] == [0.0, 0.0]
    # Two equally noisy models: an interval around a small gap that includes 0.
    rng = np.random.default_rng(9)
    other = truth + rng.normal(0, 1.5, len(truth))
    other_label = np.clip(np.rint(other), 1, 4).astype(int)
    gap = bootstrap_gap(truth, names, a_label, a_score, other_label, other, resamples=400)
    for metric in ("ndcg10", "qwk"):
        lo, hi = gap[metric]["ci95"]
        assert lo < 0 < hi, (metric, gap[metric])


def test_splits_are_disjoint_nested_and_sized() -> None:
    splits = scaling_splits(10_000, eval_rows=1000, human=100, multiples=[5, 20, 50], seed=0)
    assert len(splits["eval"]) == 1000 and len(splits["human"]) == 100
    assert not set(splits["eval"]) & set(splits["human"])
    for m in (5, 20, 50):
        rows = set(splits[f"{m}x"])
        assert len(rows) == m * 100
        assert not rows & (set(splits["eval"]) | set(splits["human"]))
    assert set(splits["5x"]) <= set(splits["20x"]) <= set(splits["50x"])
    assert np.array_equal(scaling_splits(10_000, 1000, 100, [5], seed=0)["5x"], splits["5x"])

    day = np.sort(np.random.default_rng(1).uniform(0, 56, 20_000))
    fresh = freshness_splits(day, d=25.0, dk=39.0, cap=3000, seed=0)
    assert len(fresh["A"]) == len(fresh["B"]) == len(fresh["B_recent"]) == 3000
    assert day[fresh["A"]].max() < 25.0
    assert day[fresh["B"]].max() < 39.0 and day[fresh["B"]].max() > 25.0
    assert day[fresh["B_recent"]].min() > day[fresh["B"]].min()
    assert day[fresh["eval"]].min() >= 39.0 and len(fresh["eval"]) == (day >= 39.0).sum()
    small = freshness_splits(day, d=1.0, dk=39.0, cap=3000, seed=0)
    assert len(small["A"]) == len(small["B"]) == (day < 1.0).sum()


def test_world_rows_have_point_in_time_text_grades_and_metadata() -> None:
    settings = Settings()
    settings.generator.seed = 5
    settings.generator.impressions = 1500
    settings.generator.sim_days = 20
    frame = collect_world_rows(settings)
    assert len(frame) == 1500
    assert frame["impression_id"].is_unique
    assert (frame["day"].diff().dropna() >= 0).all() and frame["day"].max() < 20

    # An independent replay of the same world: the pin's content and caption events.
    timeline = Timeline(settings.generator)
    world = timeline.world
    history: dict[str, list[tuple[datetime, str, str | None]]] = {}
    impressions = []
    for event in timeline.events():
        if isinstance(event, PinContent):
            history.setdefault(event.pin_id, []).append((event.updated_at, "title", event.title))
        elif isinstance(event, PinCaption):
            history.setdefault(event.pin_id, []).append(
                (event.created_at, "caption", event.caption)
            )
        elif isinstance(event, Impression):
            impressions.append(event)
    assert frame["impression_id"].tolist() == [i.impression_id for i in impressions]

    later_caption = 0
    for row, impression in zip(frame.itertuples(), impressions, strict=True):
        latest: dict[str, str | None] = {}
        for when, field, value in history[row.pin_id]:
            if when <= impression.event_time:
                latest[field] = value
            elif field == "caption" and "caption" not in latest:
                later_caption += 1
        fields = split_pin_text(row.pin_text)
        assert ("caption" in fields) == ("caption" in latest), row.impression_id
        grade = timeline.relevance.grade(
            world.query_by_text[row.query], world.pin_by_id[row.pin_id]
        )
        assert row.grade == grade
        query = world.queries[world.query_by_text[row.query]]
        assert row.lang == query.lang
        assert row.family == world.topics[query.topic].family
    # Some impressions came before their pin's caption: the text must not have it yet.
    assert later_caption > 0
    assert set(frame["grade"]) <= {1, 2, 3, 4}

    trends = frame[frame["emerges_day"].notna()]
    assert len(trends) > 0
    assert (trends["day"] >= trends["emerges_day"]).all()
    assert frame.loc[frame["emerges_day"].isna(), "emerges_at"].isna().all()

    share = collect_world_rows(settings, share=0.3)
    assert 300 < len(share) < 600
    assert set(share["impression_id"]) <= set(frame["impression_id"])
    assert share.equals(collect_world_rows(settings, share=0.3))
