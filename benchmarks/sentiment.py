"""Sentiment benchmark: the encoder model (all-MiniLM-L6-v2 + a trained head), the n-gram
classifier, a bag-of-words baseline (TF-IDF + logistic regression) and VADER, on one
shop's reviews and on seeded random samples of them (a small shop's worth).

    python -m benchmarks.sentiment --reviews reviews.csv [--samples 3000 500]
        [--headline-column title] [--json result.json]

The CSV needs ``text`` and ``rating`` (1-5) columns; rows without text are dropped. With
``--headline-column`` every model reads a review's headline before its text, as the app
does for reviews sent with a ``review_title``.
At every size: a stratified 80/20 split with a fixed seed; every model trains on the 80%
(thresholds from a slice of that 80%) and is scored on the 20%, rating 3 left out of the
binary figures. Throughput is measured on the saved-and-reloaded model, as serving uses
it. Without the encoder package installed, the encoder model is left out.
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

from recommender.ml.encoder import encoder_installed, encoder_precision, quantized_runtime_installed
from recommender.ml.encoder_sentiment import load_sentiment_model, train_encoder_sentiment
from recommender.ml.lexicon import review_text
from recommender.ml.sentiment import (
    SentimentScorer,
    VaderBaseline,
    best_binary_threshold,
    evaluate_sentiment,
    sentiment_labels,
    stratified_split,
    train_sentiment,
)

SPLIT_SEED = 42
SAMPLE_SEED = 0
TEST_FRACTION = 0.2
# Texts per throughput measurement: enough for a steady rate, few enough that the
# encoder's measurement takes under a minute on a 2-core CPU.
THROUGHPUT_TEXTS = {"encoder": 2_000, "ngram": 5_000, "tfidf_logreg": 5_000, "vader": 5_000}
TARGETS = {"ngram_macro_f1_min": 0.86, "ngram_texts_per_second_min": 2_000,
           "encoder_macro_f1_min": 0.90, "encoder_margin_min": 0.03,
           "encoder_texts_per_second_min": 300}


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


def load_reviews(path: Path, headline_column: str = "") -> tuple[list[str], list[int]]:
    """Texts and ratings of the rows with text; with headline_column, each text as the
    app reads a review with a headline (``review_text``: headline first)."""
    columns = ["text", "rating", *([headline_column] if headline_column else [])]
    frame = pd.read_csv(path, usecols=columns)
    frame = frame[frame["text"].notna() & (frame["text"].astype(str).str.strip() != "")]
    frame = frame[frame["rating"].notna()]
    texts = frame["text"].astype(str).tolist()
    if headline_column:  # review_text ignores the NaN of a row without a headline
        texts = [review_text(text, headline)
                 for text, headline in zip(texts, frame[headline_column].tolist())]
    return texts, frame["rating"].astype(int).tolist()


def texts_per_second(model: SentimentScorer, texts: list[str]) -> float:
    model.predict_positive_proba(texts[:256])  # warm-up: tracing and lazy loading
    started = time.perf_counter()
    model.predict_positive_proba(texts)
    return len(texts) / (time.perf_counter() - started)


def throughput_sample(texts: list[str], count: int) -> list[str]:
    repeats = math.ceil(count / max(len(texts), 1))
    return (texts * repeats)[:count]


def served(model: SentimentScorer, directory: Path) -> SentimentScorer:
    """The model as serving sees it: saved, then loaded back from its artifact."""
    model.save(directory)
    return load_sentiment_model(directory)


def compare_models(texts: list[str], ratings: list[int], *, with_encoder: bool) -> dict[str, Any]:
    """Every model trained on the same 80% and scored on the same 20%."""
    train_texts, test_texts, train_ratings, test_ratings = stratified_split(
        texts, ratings, TEST_FRACTION, SPLIT_SEED)
    results: dict[str, dict[str, Any]] = {}
    trainers: dict[str, Any] = {"ngram": train_sentiment}
    if with_encoder:
        trainers = {"encoder": train_encoder_sentiment, **trainers}
    reports = {}
    for name, train in trainers.items():
        model, reports[name] = train(train_texts, train_ratings)
        with tempfile.TemporaryDirectory() as artifact_directory:
            model = served(model, Path(artifact_directory))
            results[name] = evaluate_sentiment(model, test_texts, test_ratings)
            sample = throughput_sample(test_texts.tolist(), THROUGHPUT_TEXTS[name])
            results[name]["texts_per_second"] = texts_per_second(model, sample)
        results[name]["train_seconds"] = reports[name]["train_seconds"]
        results[name]["training"] = {key: reports[name][key] for key in (
            "epochs_run", "best_epoch", "batch_size", "sequence_length", "vocabulary_size",
            "decision_threshold", "negative_threshold", "positive_threshold", "threshold_source",
            "selection_macro_f1", "device", "precision", "quantized", "frozen_selection_macro_f1",
            "fine_tuned_selection_macro_f1", "fine_tuned_blocks", "fine_tune_seconds")
            if key in reports[name]}

    started = time.perf_counter()
    bag_of_words = BagOfWordsBaseline(train_texts, train_ratings)
    results["tfidf_logreg"] = evaluate_sentiment(bag_of_words, test_texts, test_ratings)
    results["tfidf_logreg"]["train_seconds"] = time.perf_counter() - started
    results["tfidf_logreg"]["texts_per_second"] = texts_per_second(
        bag_of_words, throughput_sample(test_texts.tolist(), THROUGHPUT_TEXTS["tfidf_logreg"]))

    vader = VaderBaseline()
    results["vader"] = evaluate_sentiment(vader, test_texts, test_ratings)
    results["vader"]["train_seconds"] = 0.0
    results["vader"]["texts_per_second"] = texts_per_second(
        vader, throughput_sample(test_texts.tolist(), THROUGHPUT_TEXTS["vader"]))
    return {
        "reviews": len(texts), "train": len(train_texts), "test": len(test_texts),
        "test_binary": sum(sum(row) for row in results["vader"]["confusion_matrix"]),
        "device": reports["ngram"]["device"], "models": results,
    }


def targets_met(comparisons: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The encoder model's margin over the better baseline at every size, its macro-F1 on
    the whole file and its throughput on the whole file's test texts."""
    met: dict[str, Any] = dict(TARGETS)
    for size, comparison in comparisons.items():
        models = comparison["models"]
        if "encoder" not in models:
            continue
        floor = max(models["vader"]["macro_f1"], models["tfidf_logreg"]["macro_f1"])
        met[f"encoder_margin_{size}"] = models["encoder"]["macro_f1"] - floor
        met[f"encoder_margin_{size}_met"] = met[f"encoder_margin_{size}"] >= TARGETS["encoder_margin_min"]
    full = comparisons["full"]["models"]
    met["ngram_macro_f1_met"] = full["ngram"]["macro_f1"] >= TARGETS["ngram_macro_f1_min"]
    met["ngram_texts_per_second_met"] = (
        full["ngram"]["texts_per_second"] >= TARGETS["ngram_texts_per_second_min"])
    if "encoder" in full:
        met["encoder_macro_f1_met"] = full["encoder"]["macro_f1"] >= TARGETS["encoder_macro_f1_min"]
        met["encoder_texts_per_second_met"] = (
            full["encoder"]["texts_per_second"] >= TARGETS["encoder_texts_per_second_min"])
    return met


def run(reviews: Path, samples: list[int], headline_column: str = "") -> dict[str, Any]:
    texts, ratings = load_reviews(reviews, headline_column)
    with_encoder = encoder_installed()
    comparisons = {"full": compare_models(texts, ratings, with_encoder=with_encoder)}
    frame = pd.DataFrame({"text": texts, "rating": ratings})
    for size in samples:
        sample = frame.sample(n=min(size, len(frame)), random_state=SAMPLE_SEED)
        comparisons[str(size)] = compare_models(sample["text"].tolist(), sample["rating"].tolist(),
                                                with_encoder=with_encoder)
    return {
        "dataset": {"path": str(reviews), "reviews": len(texts), "split_seed": SPLIT_SEED,
                    "sample_seed": SAMPLE_SEED, "headline_column": headline_column or None},
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "cpus": os.cpu_count(), "device": comparisons["full"]["device"],
                    "encoder_precision": encoder_precision(),
                    "litert_installed": quantized_runtime_installed()},
        "models": comparisons["full"]["models"],
        "samples": {size: comparison for size, comparison in comparisons.items() if size != "full"},
        "targets": targets_met(comparisons),
    }


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'reviews':<9}{'model':<14}{'accuracy':>10}{'macro-F1':>10}{'ROC AUC':>10}"
             f"{'train s':>10}{'texts/s':>10}"]
    sizes = {"full": {"models": result["models"]}, **result["samples"]}
    for size, comparison in sizes.items():
        for name, figures in comparison["models"].items():
            lines.append(f"{size:<9}{name:<14}{figures['accuracy']:>10.4f}{figures['macro_f1']:>10.4f}"
                         f"{figures['roc_auc']:>10.4f}{figures['train_seconds']:>10.1f}"
                         f"{figures['texts_per_second']:>10.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reviews", type=Path, required=True, help="CSV with text and rating columns")
    parser.add_argument("--samples", type=int, nargs="*", default=[3_000, 500],
                        help="also compare on seeded random samples of these sizes")
    parser.add_argument("--headline-column", default="",
                        help="the CSV column holding each review's headline (the clothing "
                             "file's `title`), read before the text as the app reads a "
                             "review's `review_title`; default: texts alone")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = run(args.reviews, args.samples, args.headline_column)
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
