"""The shared text builder, lexical features, metrics and the stacker: pure functions."""

from __future__ import annotations

import numpy as np
import pytest

from serving.teacher.data import load_pairs, query_folds
from serving.teacher.lexical import LEXICAL_FEATURES, Bm25Stats, pair_features, stem
from serving.teacher.metrics import auroc_by_threshold, ndcg_at, qwk
from serving.teacher.stacker import apply_thresholds, fit_stacker, fit_thresholds
from serving.teacher.text import (
    PinView,
    build_pin_text,
    check_budgets,
    clean_text,
    drop_stopwords,
    english_stopwords,
    split_pin_text,
    trim_pin_text,
)
from tests.teacher_fixtures import world_sample


def test_fields_in_order_with_markers_and_absent_fields_skipped() -> None:
    text = build_pin_text(
        title="Oak Desk",
        description="Solid <b>oak</b> &amp; steel",
        caption=None,
        board_titles=["Office", "", "Office", "Study"],
        top_queries=[],
        link_title="   ",
    )
    assert text == "title: Oak Desk | boards: Office; Study | description: Solid oak & steel"
    assert build_pin_text() == ""
    assert "caption" not in text and "searches" not in text and "link" not in text


def test_each_field_is_cut_to_its_word_budget() -> None:
    long = " ".join(f"w{i}" for i in range(500))
    text = build_pin_text(title="short title", description=long)
    description = split_pin_text(text)["description"]
    assert len(description.split()) == 48
    assert split_pin_text(text)["title"] == "short title"


def test_split_inverts_build_even_with_separators_in_the_text() -> None:
    text = build_pin_text(title="a | b", caption="c: d", top_queries=["x", "y"])
    fields = split_pin_text(text)
    assert fields == {"title": "a | b", "caption": "c: d", "top_queries": "x; y"}


def test_trim_cuts_named_fields_and_drops_those_at_zero() -> None:
    text = build_pin_text(
        title="Oak desk",
        description="solid oak with two deep drawers",
        board_titles=["Office", "Study"],
    )
    assert trim_pin_text(text, {"description": 2}) == (
        "title: Oak desk | boards: Office; Study | description: solid oak"
    )
    assert trim_pin_text(text, {"description": 0, "board_titles": 0}) == "title: Oak desk"
    assert trim_pin_text(text, {"title": 0, "board_titles": 0, "description": 0}) == ""
    assert trim_pin_text(text, {}) == text
    # a budget above the field's own length, or for an absent field, changes nothing
    assert trim_pin_text(text, {"description": 40, "caption": 3}) == text
    # without markers: the fields' words, in order, joined by single spaces
    assert trim_pin_text(text, {"description": 2}, markers=False) == (
        "Oak desk Office; Study solid oak"
    )
    assert trim_pin_text(text, {}, markers=False) == (
        "Oak desk Office; Study solid oak with two deep drawers"
    )


def test_budgets_for_unknown_fields_or_below_zero_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown pin text field 'desc': use one of title"):
        check_budgets({"desc": 8})
    with pytest.raises(ValueError, match="word budget of 'title' is -1: give a whole number"):
        trim_pin_text("title: a", {"title": -1})
    assert check_budgets({"description": 0}) == {"description": 0}


def test_clean_text_and_stem() -> None:
    assert clean_text("  a\n\tb  <br/> c ") == "a b c"
    words = ("lamps", "boxes", "batteries", "glass", "bus")
    assert [stem(w) for w in words] == ["lamp", "box", "battery", "glass", "bus"]


def test_lexical_features_reward_title_matches() -> None:
    stats = Bm25Stats.fit(["title: oak desk", "title: red shoes", "title: glass lamp"])
    match = pair_features(stats, "oak desks", "title: Oak Desk | description: nice")
    miss = pair_features(stats, "oak desks", "title: glass lamp | description: oak trim")
    assert len(match) == len(LEXICAL_FEATURES)
    named = dict(zip(LEXICAL_FEATURES, match, strict=True))
    assert named["cover_title"] == 1.0 and named["all_in_title"] == 1.0
    assert match[0] > miss[0] and match[1] > miss[1]
    assert dict(zip(LEXICAL_FEATURES, miss, strict=True))["cover_title"] == 0.0


def test_metrics_on_known_cases() -> None:
    labels = np.array([4, 3, 2, 1, 4, 1])
    queries = ["a", "a", "a", "a", "b", "b"]
    perfect = np.array([0.9, 0.7, 0.5, 0.1, 0.8, 0.2])
    assert ndcg_at(labels, perfect, queries) == pytest.approx(1.0)
    assert ndcg_at(labels, -perfect, queries) < 0.7
    # Ties are broken pessimistically: a constant score earns no credit for lucky order.
    assert ndcg_at(labels, np.zeros(6), queries) < 1.0
    assert qwk(labels, labels, 4) == pytest.approx(1.0)
    aurocs = auroc_by_threshold(labels, perfect, 4)
    assert list(aurocs) == [">=2", ">=3", ">=4"] and aurocs[">=4"] == pytest.approx(1.0)


def test_thresholds_and_stacker_learn_an_ordinal_signal() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 5, 400)
    signal = labels + rng.normal(0, 0.7, 400)
    cuts = fit_thresholds(signal, labels, 4)
    assert cuts == sorted(cuts) and len(cuts) == 3
    assert qwk(labels, apply_thresholds(signal, cuts), 4) > 0.7
    x = np.column_stack([signal, rng.normal(size=400), labels + rng.normal(0, 1.0, 400)])
    groups = np.repeat(np.arange(40), 10)
    names = ["signal", "noise", "model"]
    stacker = fit_stacker(x, labels, groups, names, 4, ["signal", "noise"], ["model"])
    assert stacker.base_columns == [0, 1] and stacker.top_columns == [2]
    probs = stacker.probs(x)
    assert probs.shape == (400, 4) and np.allclose(probs.sum(1), 1.0)
    assert qwk(labels, stacker.labels(probs), 4) > 0.7


def test_column_presets_and_query_grouped_folds(tmp_path) -> None:
    pairs = load_pairs(world_sample(tmp_path / "world.parquet"), "world")
    assert pairs.scale == 4 and len(pairs.frame) == 96
    assert pairs.frame["pin_text"].str.startswith("title: ").all()
    folds = query_folds(pairs.queries, 4, seed=1)
    for query in set(pairs.queries):
        assert len(set(folds[np.asarray(pairs.queries) == query])) == 1
    with pytest.raises(ValueError, match="missing column"):
        load_pairs(tmp_path / "world.parquet", "crowdflower")


def test_drop_stopwords_ignores_case_and_punctuation_and_keeps_the_rest_as_written() -> None:
    stop = frozenset({"the", "with", "a"})
    text = "The Oak desk, with a drawer - 180° The end."
    assert drop_stopwords(text, stop) == "Oak desk, drawer - 180° end."


def test_a_view_drops_stop_words_only_in_its_fields_and_keeps_the_format() -> None:
    text = build_pin_text(
        title="The oak desk", description="Solid oak with the drawers", caption="a desk"
    )
    view = PinView(stopwords=english_stopwords(), stopword_fields=("description",))
    assert view(text) == "title: The oak desk | caption: a desk | description: Solid oak drawers"
    assert PinView()(text) == text
    with pytest.raises(ValueError, match="unknown pin text field 'body'"):
        PinView(stopword_fields=("body",))


def test_english_stopwords_are_function_words_not_content() -> None:
    words = english_stopwords()
    assert {"the", "with", "your", "and", "of"} <= words
    assert not {"oak", "desk", "waffle", "red"} & words
