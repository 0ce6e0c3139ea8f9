"""Sentiment model on a small planted corpus; no Django, no database."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score

from hypothesis import given, settings
from recommender.ml.cancellation import TrainingCancelled
from recommender.ml.sentiment import (
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    SentimentModel,
    SentimentScorer,
    VaderBaseline,
    best_binary_cut,
    best_binary_threshold,
    evaluate_sentiment,
    fit_neutral_band,
    sentiment_labels,
    keyed_split,
    stratified_split,
    train_sentiment,
)
from tests.recommender.planted import NASTY_TEXTS, planted_reviews

@pytest.fixture(scope="module")
def trained() -> tuple[SentimentModel, dict]:
    texts, ratings = planted_reviews(200, seed=1)
    return train_sentiment(texts, ratings)


def test_trained_model_separates_held_out_planted_reviews(trained):
    model, report = trained
    texts, ratings = planted_reviews(100, seed=2)
    is_positive = [rating >= 4 for rating in ratings]
    scores = model.predict_positive_proba(texts)
    assert roc_auc_score(is_positive, scores) > 0.9
    assert report["threshold_source"] == "validation"
    assert report["negative_threshold"] <= report["decision_threshold"] <= report["positive_threshold"]


def test_predict_gives_a_label_and_score_per_text(trained):
    model, _ = trained
    predictions = model.predict(["lovely soft dress", "awful itchy fabric"])
    assert [label for label, _ in predictions] == [POSITIVE, NEGATIVE]
    assert all(0.0 <= score <= 1.0 for _, score in predictions)


def test_save_and_load_give_the_same_probabilities(trained, tmp_path: Path):
    model, _ = trained
    texts, _ = planted_reviews(20, seed=3)
    model.save(tmp_path / "sentiment")
    loaded = SentimentModel.load(tmp_path / "sentiment")
    np.testing.assert_allclose(loaded.predict_positive_proba(texts),
                               model.predict_positive_proba(texts), atol=1e-6)
    assert loaded.decision_threshold == model.decision_threshold
    assert loaded.negative_threshold == model.negative_threshold


def test_should_stop_cancels_training():
    texts, ratings = planted_reviews(60, seed=4)
    with pytest.raises(TrainingCancelled):
        train_sentiment(texts, ratings, should_stop=lambda: True)


def test_progress_reports_validation_macro_f1_and_the_best_epoch_is_kept():
    texts, ratings = planted_reviews(60, seed=5)
    epochs: list[tuple[int, dict]] = []
    _, report = train_sentiment(texts, ratings,
                                on_epoch_end=lambda epoch, logs: epochs.append((epoch, logs)))
    assert [epoch for epoch, _ in epochs][:2] == [1, 2]
    f1_by_epoch = [logs["val_macro_f1"] for _, logs in epochs]
    assert all(0.0 <= f1 <= 1.0 for f1 in f1_by_epoch)
    assert report["best_epoch"] == int(np.argmax(f1_by_epoch)) + 1


def test_one_sided_data_is_refused():
    with pytest.raises(ValueError, match="negative and positive"):
        train_sentiment(["great", "lovely", "perfect"], [5, 4, 5])


def test_vader_labels_an_obviously_negative_text_negative():
    vader = VaderBaseline()
    [(label, score)] = vader.predict(["This is terrible, awful quality and I hate it."])
    assert label == NEGATIVE
    assert score < vader.negative_threshold
    [(label, _)] = vader.predict(["I love it, absolutely wonderful!"])
    assert label == POSITIVE


class FixedScores(SentimentScorer):
    decision_threshold = 0.5
    negative_threshold = 0.5
    positive_threshold = 0.5

    def __init__(self, scores: dict[str, float]) -> None:
        self.scores = scores

    def predict_positive_proba(self, texts: Iterable[str]) -> np.ndarray:
        return np.asarray([self.scores[text] for text in texts])


def test_evaluate_sentiment_on_a_hand_made_example():
    scorer = FixedScores({"a": 0.9, "b": 0.8, "c": 0.3, "d": 0.6, "e": 0.2, "f": 0.5})
    # f is rating 3 and left out. Truth (neg=0, pos=1): a1 b1 c1 d0 e0; predicted at
    # 0.5: a1 b1 c0 d1 e0. Positive: tp=2 fp=1 fn=1 -> F1 = 4/6 = 2/3. Negative: tp=1
    # (e) fp=1 (c) fn=1 (d) -> F1 = 2/4 = 1/2. Macro-F1 = (2/3 + 1/2) / 2 = 7/12.
    # AUC: positive scores {0.9, 0.8, 0.3} vs negative {0.6, 0.2}: of the 6 pairs only
    # (0.3, 0.6) is out of order, so 5/6.
    result = evaluate_sentiment(scorer, ["a", "b", "c", "d", "e", "f"], [5, 4, 5, 1, 2, 3])
    assert set(result) == {"accuracy", "macro_f1", "roc_auc", "confusion_matrix"}
    assert result["macro_f1"] == pytest.approx(7 / 12)
    assert result["accuracy"] == pytest.approx(3 / 5)
    assert result["roc_auc"] == pytest.approx(5 / 6)
    assert result["confusion_matrix"] == [[1, 1], [1, 2]]


def test_sentiment_labels_accepts_ratings_and_explicit_labels():
    labels = sentiment_labels([1, 2, 3, 4, 5, "5", 4.0, "Positive", " neutral ", "negative"])
    assert labels.tolist() == [NEGATIVE, NEGATIVE, NEUTRAL, POSITIVE, POSITIVE, POSITIVE,
                               POSITIVE, POSITIVE, NEUTRAL, NEGATIVE]
    for bad in (0, 6, 3.5, "great", None):
        with pytest.raises(ValueError):
            sentiment_labels([bad])


def test_stratified_split_keeps_proportions_and_tolerates_rare_values():
    texts = [f"review {index}" for index in range(101)]
    ratings = [5] * 80 + [1] * 20 + [3]
    train_texts, test_texts, train_ratings, test_ratings = stratified_split(texts, ratings, 0.2, seed=7)
    assert sorted(test_ratings.tolist()) == [1] * 4 + [5] * 16
    assert len(train_texts) == 81 and set(train_texts) | set(test_texts) == set(texts)
    again = stratified_split(texts, ratings, 0.2, seed=7)
    assert again[1].tolist() == test_texts.tolist()


def test_keyed_split_holds_out_a_fifth_and_never_moves_a_training_row_to_the_test_part():
    ids = np.arange(1, 2001)
    texts = [f"review {index}" for index in ids]
    labels = ["positive"] * 1900 + ["negative"] * 100
    _, test_texts, _, test_labels = keyed_split(texts, labels, ids)
    assert 0.17 < len(test_texts) / len(texts) < 0.23
    assert 8 <= (test_labels == "negative").sum() <= 35
    # Half the reviews first, then all of them, in another order: the first split's
    # training rows all stay training rows, and its test rows stay test rows.
    first_train, first_test, _, _ = keyed_split(texts[:1000], labels[:1000], ids[:1000])
    shuffled = np.random.default_rng(0).permutation(2000)
    later_train, later_test, _, _ = keyed_split(np.asarray(texts)[shuffled],
                                                np.asarray(labels)[shuffled], ids[shuffled])
    assert set(first_train) <= set(later_train) and set(first_test) <= set(later_test)
    assert set(later_test) == set(test_texts)


def test_keyed_split_holds_out_the_minimum_asked_of_a_label_and_stays_stable_as_it_grows():
    ids = np.arange(100, 160)
    labels = ["positive"] * 40 + ["negative"] * 10 + ["neutral"] * 10
    texts = [f"{label} {index}" for label, index in zip(labels, ids)]
    at_least = {"negative": 4, "positive": 2}
    train_texts, _, _, test_labels = keyed_split(texts, labels, ids, min_test=at_least)
    assert (test_labels == "negative").sum() >= 4 and (test_labels == "positive").sum() >= 2
    without = keyed_split(texts, labels, ids)[3]
    assert (test_labels == "neutral").sum() == (without == "neutral").sum()  # none asked
    for added in range(1, 30):
        grown = keyed_split(texts + [f"negative {500 + n}" for n in range(added)],
                            labels + ["negative"] * added,
                            np.append(ids, np.arange(500, 500 + added)), min_test=at_least)
        assert not set(grown[1]) & set(train_texts)


def test_best_binary_threshold_separates_separable_scores():
    threshold = best_binary_threshold(np.array([0.1, 0.2, 0.7, 0.9]), np.array([False, False, True, True]))
    assert threshold == pytest.approx(0.45)


def test_best_binary_cut_reports_the_macro_f1_it_reaches():
    scores = np.array([0.1, 0.2, 0.6, 0.7, 0.9])
    is_positive = np.array([False, False, True, False, True])
    threshold, macro_f1 = best_binary_cut(scores, is_positive)
    # Cut at 0.4 (positive: 0.6, 0.7, 0.9): positive F1 = 4/5, negative F1 = 4/5; the cuts
    # at 0.65 and 0.8 reach 0.58 and 0.76.
    assert threshold == pytest.approx(0.4)
    assert macro_f1 == pytest.approx(0.8)


def test_neutral_band_collapses_without_neutral_texts_and_opens_with_them():
    scores = np.array([0.1, 0.2, 0.45, 0.5, 0.55, 0.8, 0.9])
    binary_labels = np.array([NEGATIVE, NEGATIVE, POSITIVE, POSITIVE, POSITIVE, POSITIVE, POSITIVE])
    assert fit_neutral_band(scores, binary_labels, 0.3) == (0.3, 0.3)
    labels = np.array([NEGATIVE, NEGATIVE, NEUTRAL, NEUTRAL, NEUTRAL, POSITIVE, POSITIVE])
    negative_threshold, positive_threshold = fit_neutral_band(scores, labels, 0.3)
    assert 0.2 <= negative_threshold < 0.45 and 0.55 < positive_threshold <= 0.8


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(NASTY_TEXTS, min_size=1, max_size=8))
def test_any_text_gets_a_finite_score_in_the_unit_interval(trained, texts):
    model, _ = trained
    predictions = model.predict_with_source(texts)
    assert len(predictions) == len(texts)
    for label, score, source in predictions:
        assert math.isfinite(score) and 0.0 <= score <= 1.0
        assert label in (NEGATIVE, NEUTRAL, POSITIVE) and source in ("model", "lexicon")
    # The benchmark's evaluation takes the same texts without failing on NaN.
    figures = evaluate_sentiment(model, texts + ["lovely", "awful"], [5] * len(texts) + [5, 1])
    assert math.isfinite(figures["macro_f1"])


def test_a_text_with_no_ngram_is_scored_by_the_lexicon_and_says_so(trained):
    model, _ = trained
    (_, punctuation_score, source), (_, _, known) = model.predict_with_source(
        ["!!!", "lovely soft dress"])
    assert source == "lexicon" and known == "model"
    assert punctuation_score == pytest.approx(0.5)


def test_a_review_with_no_ngram_does_not_spoil_training():
    texts, ratings = planted_reviews(120, seed=6)
    # A shop's "!!!" rated 5: no n-gram, so its mean embedding would be 0 / 0.
    model, report = train_sentiment([*texts, "!!!", "...", "?!"], [*ratings, 5, 1, 4])

    (_, _, source), = model.predict_with_source(["lovely soft dress"])
    assert source == "model"
    assert math.isfinite(report["selection_macro_f1"]) and report["selection_macro_f1"] > 0.8


def test_on_a_gpu_the_model_trains_in_mixed_precision_and_is_served_in_float32(fake_gpu,
                                                                               tmp_path):
    texts, ratings = planted_reviews(120, seed=7)
    model, report = train_sentiment(texts, ratings)
    model.save(tmp_path / "sentiment")

    assert (report["device"], report["mixed_precision"]) == ("gpu", True)
    assert report["selection_macro_f1"] > 0.8
    served = SentimentModel.load(tmp_path / "sentiment")
    (_, score, source), = served.predict_with_source(["lovely soft dress"])
    assert source == "model" and 0.0 <= score <= 1.0
