"""Sentiment benchmark: the trained n-gram classifier next to VADER and a bag-of-words
baseline (TF-IDF + logistic regression) on one shop's reviews.

    python -m benchmarks.sentiment --reviews reviews.csv [--json result.json]

The CSV needs ``text`` and ``rating`` (1-5) columns; rows without text are dropped.
A stratified 80/20 split with a fixed seed; the model trains on the 80% (its thresholds
come from a slice of that 80%), and both models are scored on the 20% with rating 3
left out of the binary figures. The bag-of-words baseline picks its threshold the same
way, on a slice of the 80%. Throughput is measured on the saved-and-reloaded model,
as serving would use it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recommender.ml.sentiment import (
    SentimentModel,
    SentimentScorer,
    VaderBaseline,
    best_binary_threshold,
    evaluate_sentiment,
    sentiment_labels,
    stratified_split,
    train_sentiment,
)

SPLIT_SEED = 42
TEST_FRACTION = 0.2
THROUGHPUT_TEXTS = 5_000
TARGETS = {"ngram_macro_f1_min": 0.86, "ngram_texts_per_second_min": 2_000}


class BagOfWordsBaseline(SentimentScorer):
    """TF-IDF over unigrams and bigrams + class-balanced logistic regression, trained on
    negative vs positive texts; its threshold maximises macro-F1 on 15% of the training
    texts held out from the fit, as the n-gram model's does."""

    def __init__(self, texts, ratings) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        labels = sentiment_labels(ratings)
        binary = labels != "neutral"
        texts = np.asarray(texts, dtype=object)[binary]
        is_positive = (labels[binary] == "positive").astype(int)
        fit_texts, threshold_texts, fit_labels, threshold_labels = stratified_split(
            texts, is_positive, 0.15, SPLIT_SEED)
        self._vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        self._classifier = LogisticRegression(max_iter=2000, class_weight="balanced")
        self._classifier.fit(self._vectorizer.fit_transform(fit_texts),
                             fit_labels.astype(int))
        threshold = best_binary_threshold(self.predict_positive_proba(threshold_texts),
                                          threshold_labels.astype(bool))
        self.decision_threshold = self.negative_threshold = self.positive_threshold = threshold

    def predict_positive_proba(self, texts) -> np.ndarray:
        return self._classifier.predict_proba(self._vectorizer.transform(list(texts)))[:, 1]


def load_reviews(path: Path) -> tuple[list[str], list[int]]:
    frame = pd.read_csv(path, usecols=["text", "rating"])
    frame = frame[frame["text"].notna() & (frame["text"].astype(str).str.strip() != "")]
    frame = frame[frame["rating"].notna()]
    return frame["text"].astype(str).tolist(), frame["rating"].astype(int).tolist()


def texts_per_second(model: SentimentScorer, texts: list[str]) -> float:
    model.predict_positive_proba(texts[:256])  # warm-up: tracing and lazy loading
    started = time.perf_counter()
    model.predict_positive_proba(texts)
    return len(texts) / (time.perf_counter() - started)


def throughput_sample(texts: list[str]) -> list[str]:
    repeats = math.ceil(THROUGHPUT_TEXTS / max(len(texts), 1))
    return (texts * repeats)[:THROUGHPUT_TEXTS]


def run(reviews: Path) -> dict[str, Any]:
    texts, ratings = load_reviews(reviews)
    train_texts, test_texts, train_ratings, test_ratings = stratified_split(
        texts, ratings, TEST_FRACTION, SPLIT_SEED)
    sample = throughput_sample(test_texts.tolist())

    model, training_report = train_sentiment(train_texts, train_ratings)
    with tempfile.TemporaryDirectory() as artifact_directory:
        model.save(Path(artifact_directory))
        served_model = SentimentModel.load(Path(artifact_directory))
        ngram_result = evaluate_sentiment(served_model, test_texts, test_ratings)
        ngram_result["train_seconds"] = training_report["train_seconds"]
        ngram_result["texts_per_second"] = texts_per_second(served_model, sample)
    ngram_result["training"] = {key: training_report[key] for key in (
        "epochs_run", "best_epoch", "batch_size", "sequence_length", "vocabulary_size",
        "decision_threshold", "negative_threshold", "positive_threshold", "device")}

    vader = VaderBaseline()
    vader_result = evaluate_sentiment(vader, test_texts, test_ratings)
    vader_result["train_seconds"] = 0.0
    vader_result["texts_per_second"] = texts_per_second(vader, sample)

    started = time.perf_counter()
    bag_of_words = BagOfWordsBaseline(train_texts, train_ratings)
    bag_of_words_result = evaluate_sentiment(bag_of_words, test_texts, test_ratings)
    bag_of_words_result["train_seconds"] = time.perf_counter() - started
    bag_of_words_result["texts_per_second"] = texts_per_second(bag_of_words, sample)

    return {
        "dataset": {"path": str(reviews), "reviews": len(texts), "train": len(train_texts),
                    "test": len(test_texts),
                    "test_binary": sum(sum(row) for row in ngram_result["confusion_matrix"]),
                    "split_seed": SPLIT_SEED},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "device": training_report["device"]},
        "models": {"ngram": ngram_result, "vader": vader_result,
                   "tfidf_logreg": bag_of_words_result},
        "targets": {**TARGETS,
                    "ngram_macro_f1_met": ngram_result["macro_f1"] >= TARGETS["ngram_macro_f1_min"],
                    "ngram_texts_per_second_met":
                        ngram_result["texts_per_second"] >= TARGETS["ngram_texts_per_second_min"]},
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'model':<13}{'accuracy':>10}{'macro-F1':>10}{'ROC AUC':>10}{'train s':>10}{'texts/s':>10}"]
    for name, figures in result["models"].items():
        lines.append(f"{name:<13}{figures['accuracy']:>10.4f}{figures['macro_f1']:>10.4f}"
                     f"{figures['roc_auc']:>10.4f}{figures['train_seconds']:>10.1f}"
                     f"{figures['texts_per_second']:>10.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=Path, required=True, help="CSV with text and rating columns")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.reviews)
    print(format_table(result))
    for name, figures in result["models"].items():
        print(f"{name} confusion matrix [[neg->neg, neg->pos], [pos->neg, pos->pos]]: "
              f"{figures['confusion_matrix']}")
    print(f"targets: {result['targets']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
