"""Review sentiment: a TensorFlow n-gram text classifier trained on a shop's own reviews,
and VADER behind the same interface.

Labels come from star ratings (4-5 positive, 1-2 negative, 3 neutral) or from explicit
"positive"/"negative"/"neutral" labels; ``sentiment_labels`` turns either into labels.

Decision on neutral: the network is a *binary* classifier of p(positive), trained on the
negative and positive texts only, and "neutral" is a calibration band on that
probability. A rating of 3 is not a class of its own in shop reviews: those texts mix
praise and complaint and are far fewer than either pole, so a third softmax class learns
little and blurs the negative/positive boundary that matters most. Three thresholds sit
on p(positive), all chosen on an internal validation slice of the *training* data:

* ``decision_threshold`` t: the cut maximising macro-F1 of negative vs positive; used
  for the binary figures of ``evaluate_sentiment``.
* ``negative_threshold`` <= t <= ``positive_threshold``: the neutral band, chosen to
  maximise three-class macro-F1 on the validation texts when neutral texts exist
  there. Without neutral texts there is nothing to fit it on, so the band collapses to
  t and the model only ever says negative or positive.

``predict`` says positive when p >= positive_threshold, negative when
p <= negative_threshold, and neutral in between; ``VaderBaseline`` shares that interface
with VADER's documented compound cut-offs (+-0.05) mapped onto [0, 1].

Decision on architecture: an embedding bag of unigrams *and bigrams* (fastText style:
each n-gram gets a small learned vector, the review is their masked mean, then dropout and
a sigmoid). Bigrams keep the local word order that carries sentiment ("not good", "runs
small") which a plain bag-of-words loses. A 1D CNN with 2/3/4-word kernels over learned
embeddings was built and measured on the women's clothing reviews (23k): it overfitted
within two or three epochs and scored lower (macro-F1 0.82, ROC AUC 0.94-0.95, ~80 s)
than this model (macro-F1 ~0.87, ROC AUC ~0.97, ~30 s), and a CNN + n-gram ensemble did
not beat the n-gram model alone; without pretrained embeddings, a few thousand negative
reviews are too few for the CNN.

The saved artifact is a Keras model whose first layer is ``TextVectorization``, so it
takes raw strings; the thresholds sit beside it in a JSON file. Sizes that depend on
the data (sequence length, batch size, epoch cap) are derived from the training texts,
so the same defaults serve a 50-review shop and one with hundreds of thousands.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from recommender.ml.accelerator import configure_accelerator
from recommender.ml.cancellation import TrainingCancelled
from recommender.ml.lexicon import (  # noqa: F401  (part of this module's interface)
    NEGATIVE,
    NEUTRAL,
    POSITIVE,
    SENTIMENT_LABELS,
    SentimentScorer,
    VaderBaseline,
    as_text_array,
    label_for_score,
)

logger = logging.getLogger(__name__)

MODEL_FILENAME = "model.keras"
METADATA_FILENAME = "sentiment.json"
ARTIFACT_FORMAT_VERSION = 1
# Early stopping watches this: validation macro-F1 at the best decision threshold.
VALIDATION_MONITOR = "val_macro_f1"


@dataclass(frozen=True)
class SentimentConfig:
    """Training settings. ``None`` means "derive from the size of the training data"."""

    # Unigrams and bigrams together; the most frequent are kept, the rest map to one
    # out-of-vocabulary id, which bounds memory on large shops.
    max_vocabulary: int = 50_000
    # Texts are cut to this percentile of training lengths (in words): long outliers
    # would otherwise set the padded length, and so the scoring cost, of every text.
    sequence_length_percentile: float = 95.0
    max_words: int = 256
    embedding_dim: int = 16
    dropout: float = 0.3
    learning_rate: float = 5e-3
    validation_fraction: float = 0.15
    batch_size: int | None = None
    max_epochs: int | None = None
    patience: int = 2
    seed: int = 42


def sentiment_labels(values: Iterable[Any]) -> np.ndarray:
    """Star ratings (1-5, numbers or numeric strings) or explicit labels -> label strings.

    Ratings 4-5 are positive, 1-2 negative and 3 neutral; labels are matched
    case-insensitively. Anything else raises ``ValueError`` rather than being guessed.
    """
    return np.asarray([_label_for_value(value) for value in values], dtype=object)


def _label_for_value(value: Any) -> str:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in SENTIMENT_LABELS:
            return text
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"Not a rating or sentiment label: {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"Not a rating or sentiment label: {value!r}")
    if not 1 <= value <= 5 or value != int(value):
        raise ValueError(f"Ratings must be whole numbers from 1 to 5, got {value!r}")
    if value >= 4:
        return POSITIVE
    if value <= 2:
        return NEGATIVE
    return NEUTRAL


def stratified_split(texts: Sequence[str], labels: Sequence[Any], test_fraction: float = 0.2,
                     seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_texts, test_texts, train_labels, test_labels)``, each label value split
    in the same proportion. A value too rare to contribute a test row stays in training,
    so tiny data never fails here."""
    text_array = as_text_array(texts)
    label_array = np.asarray(list(labels), dtype=object)
    if len(text_array) != len(label_array):
        raise ValueError("texts and labels differ in length")
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(len(label_array), dtype=bool)
    # Sorting on str() keeps the order of label values (and so the split) independent
    # of hashing and of mixed int/str label types.
    for value in sorted(set(label_array.tolist()), key=str):
        members = np.flatnonzero(label_array == value)
        test_count = int(round(len(members) * test_fraction))
        test_mask[rng.permutation(members)[:test_count]] = True
    return (text_array[~test_mask], text_array[test_mask],
            label_array[~test_mask], label_array[test_mask])


def keyed_split(texts: Sequence[str], labels: Sequence[Any], keys: Sequence[int],
                test_fraction: float = 0.2, min_test: Mapping[Any, int] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """As stratified_split, but a row's side follows from its integer key: it is a test row
    when the key hashes below `test_fraction`, or when it is among the `min_test[label]`
    rows of its label hashing lowest. So rows added later never move an earlier training
    row into the test part (they may move a row of the minimum out of it): a version
    retrained on grown data is judged on rows the version trained before it never learnt
    from. Deleting or relabelling a row of a minimum can bring the next-lowest into it."""
    text_array = as_text_array(texts)
    label_array = np.asarray(list(labels), dtype=object)
    positions = _key_positions(keys)
    if not len(text_array) == len(label_array) == len(positions):
        raise ValueError("texts, labels and keys differ in length")
    test_mask = positions < test_fraction
    for value, count in (min_test or {}).items():
        members = np.flatnonzero(label_array == value)
        test_mask[members[np.argsort(positions[members])[:count]]] = True
    return (text_array[~test_mask], text_array[test_mask],
            label_array[~test_mask], label_array[test_mask])


def _key_positions(keys: Sequence[int]) -> np.ndarray:
    """Each key's place in [0, 1), uniformly spread however the keys run (SplitMix64's
    finaliser: consecutive ids land far apart)."""
    mixed = np.asarray(keys, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed ^= mixed >> np.uint64(31)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2 ** 53)


@dataclass(frozen=True)
class TrainingData:
    """Labelled texts split into a fit part and a validation part for early stopping and
    thresholds. When there are too few texts to hold some out for both poles, both
    parts are all the texts (thresholds from training scores: optimistic, but still
    training data) and ``has_validation`` is False."""

    class_counts: dict[str, int]
    fit_texts: np.ndarray
    fit_labels: np.ndarray
    validation_texts: np.ndarray
    validation_labels: np.ndarray
    has_validation: bool

    @property
    def binary_fit_texts(self) -> np.ndarray:
        return self.fit_texts[self.fit_labels != NEUTRAL]

    @property
    def binary_fit_targets(self) -> np.ndarray:
        """1.0 for positive, 0.0 for negative, over ``binary_fit_texts``."""
        return (self.fit_labels[self.fit_labels != NEUTRAL] == POSITIVE).astype(np.float32)

    @property
    def binary_validation_targets(self) -> np.ndarray:
        return (self.validation_labels[self.validation_labels != NEUTRAL] == POSITIVE).astype(np.float32)


def prepare_training_data(texts: Sequence[str], labels: Sequence[Any], validation_fraction: float,
                          seed: int) -> TrainingData:
    """Raises ``ValueError`` unless both negative and positive texts are present: with one
    pole there is nothing to separate."""
    text_array = as_text_array(texts)
    label_array = sentiment_labels(labels)
    if len(text_array) != len(label_array):
        raise ValueError("texts and labels differ in length")
    class_counts = {label: int((label_array == label).sum()) for label in SENTIMENT_LABELS}
    if class_counts[NEGATIVE] == 0 or class_counts[POSITIVE] == 0:
        raise ValueError(f"Sentiment training needs negative and positive texts, got {class_counts}")
    fit_texts, validation_texts, fit_labels, validation_labels = stratified_split(
        text_array, label_array, validation_fraction, seed)
    validation_poles = set(validation_labels[validation_labels != NEUTRAL].tolist())
    if len(validation_poles) < 2:
        return TrainingData(class_counts, text_array, label_array, text_array, label_array, False)
    return TrainingData(class_counts, fit_texts, fit_labels, validation_texts, validation_labels, True)


class SentimentModel(SentimentScorer):
    """The trained network (raw strings in, p(positive) out) plus its thresholds."""

    def __init__(self, keras_model: tf.keras.Model, *, decision_threshold: float,
                 negative_threshold: float, positive_threshold: float) -> None:
        self.keras_model = keras_model
        self.decision_threshold = decision_threshold
        self.negative_threshold = negative_threshold
        self.positive_threshold = positive_threshold
        # One traced graph for every batch size: per-call Keras overhead would
        # otherwise dominate scoring time for short reviews.
        self._score_batch = tf.function(
            lambda batch: keras_model(tf.reshape(batch, (-1, 1)), training=False),
            input_signature=[tf.TensorSpec(shape=(None,), dtype=tf.string)])

    source = "model"

    def predict_positive_proba(self, texts: Iterable[str], batch_size: int = 256) -> np.ndarray:
        return self._scores_and_fallbacks(texts, batch_size)[0]

    def predict_with_source(self, texts: Iterable[str]) -> list[tuple[str, float, str]]:
        scores, fell_back = self._scores_and_fallbacks(texts, 256)
        lexicon = lexicon_scorer()
        return [(label_for_score(score, lexicon.negative_threshold, lexicon.positive_threshold),
                 float(score), lexicon.source) if fallback else
                (label_for_score(score, self.negative_threshold, self.positive_threshold),
                 float(score), self.source)
                for score, fallback in zip(scores, fell_back, strict=True)]

    def _scores_and_fallbacks(self, texts: Iterable[str],
                              batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Scores, and which texts VADER scored instead: a text with no n-gram left after
        standardisation ("!!!") has nothing to average, and the masked mean of nothing
        is NaN. The network has learned nothing about such a text; the lexicon at least
        reads its emoticons, and its score is always finite."""
        text_array = as_text_array(texts)
        batches = [self._score_batch(tf.constant(text_array[start:start + batch_size])).numpy()
                   for start in range(0, len(text_array), batch_size)]
        if not batches:
            return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=bool)
        scores = np.concatenate(batches).reshape(-1).astype(np.float64)
        fell_back = ~np.isfinite(scores)
        if fell_back.any():
            scores[fell_back] = lexicon_scorer().predict_positive_proba(text_array[fell_back])
        return np.clip(scores, 0.0, 1.0), fell_back

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.keras_model.save(directory / MODEL_FILENAME)
        metadata = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "decision_threshold": self.decision_threshold,
            "negative_threshold": self.negative_threshold,
            "positive_threshold": self.positive_threshold,
        }
        (directory / METADATA_FILENAME).write_text(json.dumps(metadata, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> SentimentModel:
        directory = Path(directory)
        metadata = json.loads((directory / METADATA_FILENAME).read_text())
        if metadata.get("format_version") != ARTIFACT_FORMAT_VERSION:
            raise ValueError(f"Unsupported sentiment artifact format: {metadata.get('format_version')!r}")
        keras_model = tf.keras.models.load_model(directory / MODEL_FILENAME, compile=False)
        return cls(keras_model, decision_threshold=metadata["decision_threshold"],
                   negative_threshold=metadata["negative_threshold"],
                   positive_threshold=metadata["positive_threshold"])


@functools.cache
def lexicon_scorer() -> VaderBaseline:
    return VaderBaseline()


def evaluate_sentiment(model: SentimentScorer, texts: Sequence[str],
                       labels: Sequence[Any]) -> dict[str, Any]:
    """Binary figures, negative vs positive, with neutral texts (rating 3) left out.

    Predictions cut the score at ``model.decision_threshold``. ``confusion_matrix`` is
    ``[[true neg -> neg, true neg -> pos], [true pos -> neg, true pos -> pos]]``.
    ``roc_auc`` is NaN when only one class is present.
    """
    text_array = as_text_array(texts)
    label_array = sentiment_labels(labels)
    binary = label_array != NEUTRAL
    is_positive = (label_array[binary] == POSITIVE).astype(int)
    scores = model.predict_positive_proba(text_array[binary])
    predicted = (scores >= model.decision_threshold).astype(int)
    both_classes = 0 < is_positive.sum() < len(is_positive)
    return {
        "accuracy": float(accuracy_score(is_positive, predicted)),
        "macro_f1": float(f1_score(is_positive, predicted, average="macro", labels=[0, 1],
                                   zero_division=0)),
        "roc_auc": float(roc_auc_score(is_positive, scores)) if both_classes else float("nan"),
        "confusion_matrix": confusion_matrix(is_positive, predicted, labels=[0, 1]).tolist(),
    }


def train_sentiment(texts: Sequence[str], labels: Sequence[Any], *,
                    config: SentimentConfig | None = None,
                    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    ) -> tuple[SentimentModel, dict[str, Any]]:
    """Train the n-gram classifier on ratings or explicit labels; see the module docstring.

    ``on_epoch_end(epoch, logs)`` gets the 1-based number of the finished epoch and its
    Keras metrics; ``should_stop()`` is polled before every batch and ends training with
    ``TrainingCancelled``. Raises ``ValueError`` unless both negative and positive texts
    are present: with one pole there is nothing to separate.
    """
    config = config or SentimentConfig()
    started = time.perf_counter()
    data = prepare_training_data(texts, labels, config.validation_fraction, config.seed)
    raise_if_cancelled(should_stop)

    tf.keras.utils.set_random_seed(config.seed)
    accelerator = configure_accelerator()
    fit_texts = data.fit_texts
    validation_texts, validation_labels = data.validation_texts, data.validation_labels
    has_validation = data.has_validation
    sequence_length = _sequence_length(fit_texts, config)
    vectorizer = _ngram_vectorizer(config, sequence_length)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(fit_texts).batch(1024))
    vocabulary = vectorizer.get_vocabulary()

    # A text of punctuation alone has no n-gram: its mean embedding is 0 / 0, a NaN that
    # spoils every weight it reaches. The network learns and is judged without such
    # texts; served, they are scored by the lexicon.
    worded = _has_ngrams(vectorizer, data.binary_fit_texts)
    binary_texts = data.binary_fit_texts[worded]
    binary_targets = data.binary_fit_targets[worded]
    if len(np.unique(binary_targets)) < 2:
        raise ValueError("Sentiment training needs negative and positive texts with words, "
                         f"got {np.bincount(binary_targets.astype(int), minlength=2).tolist()}")
    validation_worded = _has_ngrams(vectorizer, validation_texts)
    validation_binary = (validation_labels != NEUTRAL) & validation_worded
    batch_size = config.batch_size or _derived_batch_size(len(binary_texts))
    steps_per_epoch = math.ceil(len(binary_texts) / batch_size)
    max_epochs = config.max_epochs or _derived_max_epochs(steps_per_epoch)

    with accelerator.building():
        classifier = _build_classifier(len(vocabulary), sequence_length, config)
        classifier.compile(
            optimizer=tf.keras.optimizers.Adam(config.learning_rate),
            loss=tf.keras.losses.BinaryCrossentropy(),
            metrics=[tf.keras.metrics.AUC(name="auc")])

    train_data = _token_dataset(binary_texts, binary_targets, vectorizer, batch_size,
                                shuffle_seed=config.seed)
    validation_data = None
    callbacks: list[tf.keras.callbacks.Callback] = [ProgressCallback(on_epoch_end, should_stop)]
    if has_validation:
        validation_targets = (validation_labels[validation_binary] == POSITIVE
                              ).astype(np.float32)
        validation_data = _token_dataset(validation_texts[validation_binary], validation_targets,
                                         vectorizer, batch_size)
        # Stop on the metric the product is judged by (macro-F1 at the best threshold),
        # not on the loss or AUC; it is computed first so the other callbacks see it.
        callbacks.insert(0, ValidationMacroF1(validation_data, validation_targets > 0.5))
        callbacks.append(tf.keras.callbacks.EarlyStopping(
            monitor=VALIDATION_MONITOR, mode="max", patience=config.patience,
            restore_best_weights=True))
    history = classifier.fit(train_data, validation_data=validation_data, epochs=max_epochs,
                             class_weight=balanced_class_weights(binary_targets),
                             callbacks=callbacks, verbose=0)

    # Exported in float32 (built outside accelerator.building()): a mixed-precision
    # artifact would run float16 kernels when served from a CPU, slower there, not faster.
    export_model = _build_end_to_end(vocabulary, sequence_length, config)
    export_model.get_layer("classifier").set_weights(classifier.get_weights())

    provisional = SentimentModel(export_model, decision_threshold=0.5,
                                 negative_threshold=0.5, positive_threshold=0.5)
    thresholds = choose_thresholds(
        provisional.predict_positive_proba(validation_texts[validation_worded]),
        validation_labels[validation_worded])
    model = SentimentModel(export_model, decision_threshold=thresholds.decision,
                           negative_threshold=thresholds.negative,
                           positive_threshold=thresholds.positive)

    monitored = history.history.get(VALIDATION_MONITOR, history.history["auc"])
    report = {
        "architecture": "ngram",
        "device": accelerator.device,
        "mixed_precision": accelerator.mixed_precision,
        "class_counts": data.class_counts,
        "train_texts": int(len(binary_texts)),
        "validation_texts": int(validation_binary.sum()) if has_validation else 0,
        "threshold_source": "validation" if has_validation else "training",
        "vocabulary_size": len(vocabulary),
        "sequence_length": sequence_length,
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "epochs_run": len(monitored),
        "best_epoch": int(np.argmax(monitored)) + 1 if has_validation else len(monitored),
        "threshold_macro_f1": thresholds.macro_f1,
        # What the training pipeline compares candidates on: the validation texts'
        # macro-F1 at their best cut, the same rule for every architecture.
        "selection_macro_f1": thresholds.macro_f1,
        "decision_threshold": thresholds.decision,
        "negative_threshold": thresholds.negative,
        "positive_threshold": thresholds.positive,
        "config": asdict(config),
        "train_seconds": time.perf_counter() - started,
    }
    logger.info("Sentiment model trained: %s", report)
    return model, report


@dataclass(frozen=True)
class Thresholds:
    decision: float
    negative: float
    positive: float
    # Negative-vs-positive macro-F1 at ``decision`` on the texts they were chosen on.
    macro_f1: float


def choose_thresholds(scores: np.ndarray, labels: np.ndarray) -> Thresholds:
    """The decision threshold and neutral band (see the module docstring) for scores of
    texts with known labels; neutral texts only place the band."""
    labels = np.asarray(labels, dtype=object)
    binary = labels != NEUTRAL
    decision, macro_f1 = best_binary_cut(scores[binary], labels[binary] == POSITIVE)
    negative, positive = fit_neutral_band(scores, labels, decision)
    return Thresholds(decision=decision, negative=negative, positive=positive, macro_f1=macro_f1)


def best_binary_threshold(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """The cut t (positive iff score >= t) with the highest negative-vs-positive
    macro-F1; placed halfway between neighbouring scores so it does not sit on one."""
    return best_binary_cut(scores, is_positive)[0]


def best_binary_cut(scores: np.ndarray, is_positive: np.ndarray) -> tuple[float, float]:
    """``(threshold, macro_f1)``: best_binary_threshold and the macro-F1 it reaches."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    sorted_positive = np.asarray(is_positive, dtype=bool)[order]
    if len(sorted_scores) == 0:
        return 0.5, 0.0
    # Cut i predicts positive for sorted_scores[i:]; cumulative counts give every cut's
    # confusion matrix at once instead of one metric call per candidate.
    negatives_below = np.concatenate([[0], np.cumsum(~sorted_positive)])
    positives_below = np.concatenate([[0], np.cumsum(sorted_positive)])
    true_negative = negatives_below
    false_negative = positives_below
    false_positive = negatives_below[-1] - negatives_below
    true_positive = positives_below[-1] - positives_below
    macro_f1 = (_f1(true_positive, false_positive, false_negative)
                + _f1(true_negative, false_negative, false_positive)) / 2
    # A cut between two equal scores cannot be realised by a threshold.
    realisable = np.ones(len(sorted_scores) + 1, dtype=bool)
    realisable[1:-1] = sorted_scores[1:] > sorted_scores[:-1]
    best_cut = int(np.argmax(np.where(realisable, macro_f1, -1.0)))
    if best_cut == 0:
        threshold = float(sorted_scores[0])
    elif best_cut == len(sorted_scores):
        threshold = float(np.nextafter(sorted_scores[-1], np.inf))
    else:
        threshold = float((sorted_scores[best_cut - 1] + sorted_scores[best_cut]) / 2)
    return threshold, float(macro_f1[best_cut])


def fit_neutral_band(scores: np.ndarray, labels: np.ndarray, decision_threshold: float,
                     candidates_per_side: int = 64) -> tuple[float, float]:
    """``(negative_threshold, positive_threshold)`` around the decision threshold with
    the best three-class macro-F1; ``(t, t)`` when there are no neutral texts."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=object)
    if not (labels == NEUTRAL).any():
        return decision_threshold, decision_threshold
    quantiles = np.linspace(0, 1, candidates_per_side)
    below = scores[scores <= decision_threshold]
    above = scores[scores >= decision_threshold]
    lower = np.unique(np.append(np.quantile(below, quantiles) if len(below) else [], decision_threshold))
    upper = np.unique(np.append(np.quantile(above, quantiles) if len(above) else [], decision_threshold))
    lower_grid, upper_grid = np.meshgrid(lower, upper, indexing="ij")

    # counts[true][predicted] for every (lower, upper) pair, read off sorted scores.
    counts: dict[str, dict[str, np.ndarray]] = {}
    for true_label in SENTIMENT_LABELS:
        class_scores = np.sort(scores[labels == true_label])
        predicted_negative = np.searchsorted(class_scores, lower_grid, side="right")
        predicted_positive = len(class_scores) - np.searchsorted(class_scores, upper_grid, side="left")
        # Scores equal to both thresholds count as positive, as in label_for_score.
        overlap = np.where(lower_grid >= upper_grid,
                           np.searchsorted(class_scores, lower_grid, side="right")
                           - np.searchsorted(class_scores, upper_grid, side="left"), 0)
        predicted_negative = predicted_negative - overlap
        counts[true_label] = {
            NEGATIVE: predicted_negative,
            POSITIVE: predicted_positive,
            NEUTRAL: len(class_scores) - predicted_negative - predicted_positive,
        }
    macro_f1 = np.zeros(lower_grid.shape)
    for label in SENTIMENT_LABELS:
        true_positive = counts[label][label]
        predicted_total = sum(counts[other][label] for other in SENTIMENT_LABELS)
        actual_total = sum(counts[label][other] for other in SENTIMENT_LABELS)
        macro_f1 += _f1(true_positive, predicted_total - true_positive, actual_total - true_positive)
    best = np.unravel_index(int(np.argmax(macro_f1)), macro_f1.shape)
    return float(lower_grid[best]), float(upper_grid[best])


def _f1(true_positive: np.ndarray, false_positive: np.ndarray, false_negative: np.ndarray) -> np.ndarray:
    denominator = 2 * true_positive + false_positive + false_negative
    return np.divide(2 * true_positive, denominator, out=np.zeros(np.shape(denominator)),
                     where=denominator > 0)


def _sequence_length(texts: np.ndarray, config: SentimentConfig) -> int:
    """Number of n-gram ids per text: a text of n words has n unigrams and n - 1
    bigrams, and the vectorizer emits all unigrams first, so truncation drops the
    bigrams at the end of long texts before any word."""
    word_counts = [len(text.split()) for text in texts[:50_000]] or [0]
    words = int(math.ceil(np.percentile(word_counts, config.sequence_length_percentile)))
    words = int(np.clip(words, 2, config.max_words))
    return 2 * words - 1


def _ngram_vectorizer(config: SentimentConfig, sequence_length: int,
                      vocabulary: list[str] | None = None) -> tf.keras.layers.TextVectorization:
    return tf.keras.layers.TextVectorization(
        max_tokens=config.max_vocabulary, ngrams=2, output_mode="int",
        output_sequence_length=sequence_length, vocabulary=vocabulary, name="vectorizer")


def _has_ngrams(vectorizer: tf.keras.layers.TextVectorization, texts: np.ndarray
                ) -> np.ndarray:
    if not len(texts):
        return np.zeros(0, dtype=bool)
    return np.concatenate([np.any(vectorizer(texts[start:start + 4096]).numpy() != 0, axis=1)
                           for start in range(0, len(texts), 4096)])


def _derived_batch_size(train_count: int) -> int:
    """Roughly a hundred steps per epoch, so small shops still get many updates and
    large ones get efficient batches."""
    power = round(math.log2(max(train_count, 1) / 100)) if train_count > 100 else 0
    return int(np.clip(2 ** power, 16, 512))


def _derived_max_epochs(steps_per_epoch: int) -> int:
    """Enough epochs for about 1,500 updates (tiny data needs many passes), capped so
    large data is bounded; early stopping usually ends well before."""
    return int(np.clip(math.ceil(1_500 / steps_per_epoch), 8, 60))


def balanced_class_weights(targets: np.ndarray) -> dict[int, float]:
    """Each class weighs as much as the other in the loss: shops are 85-95% positive,
    and an unweighted loss would barely learn the negative side."""
    positives = float(targets.sum())
    negatives = float(len(targets) - positives)
    return {0: len(targets) / (2 * negatives), 1: len(targets) / (2 * positives)}


def _token_dataset(texts: np.ndarray, targets: np.ndarray,
                   vectorizer: tf.keras.layers.TextVectorization, batch_size: int,
                   shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Tokenises in the tf.data pipeline, in parallel with training, so large data
    streams batch by batch and a GPU is not left waiting on string ops."""
    dataset = tf.data.Dataset.from_tensor_slices((texts, targets))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(min(len(texts), 100_000), seed=shuffle_seed,
                                  reshuffle_each_iteration=True)
    return (dataset.batch(batch_size)
            .map(lambda batch_texts, batch_targets: (vectorizer(batch_texts), batch_targets),
                 num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def _build_classifier(vocabulary_size: int, sequence_length: int,
                      config: SentimentConfig) -> tf.keras.Model:
    """N-gram ids -> p(positive): the masked mean of the n-grams' embeddings, so the
    length of a review does not change the scale of its features."""
    ngram_ids = tf.keras.Input(shape=(sequence_length,), dtype="int64", name="ngram_ids")
    embedded = tf.keras.layers.Embedding(vocabulary_size, config.embedding_dim,
                                         mask_zero=True)(ngram_ids)
    features = tf.keras.layers.GlobalAveragePooling1D()(embedded)
    features = tf.keras.layers.Dropout(config.dropout)(features)
    # float32 output even under mixed precision, so the sigmoid and loss stay stable.
    probability = tf.keras.layers.Dense(1, activation="sigmoid", dtype="float32")(features)
    return tf.keras.Model(ngram_ids, probability, name="classifier")


def _build_end_to_end(vocabulary: list[str], sequence_length: int,
                      config: SentimentConfig) -> tf.keras.Model:
    """Raw strings -> p(positive), the form that is saved and served."""
    texts = tf.keras.Input(shape=(1,), dtype=tf.string, name="text")
    # [2:]: the padding and out-of-vocabulary entries are added back by the layer.
    vectorizer = _ngram_vectorizer(config, sequence_length, vocabulary[2:])
    classifier = _build_classifier(len(vocabulary), sequence_length, config)
    return tf.keras.Model(texts, classifier(vectorizer(texts)), name="sentiment")


def raise_if_cancelled(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise TrainingCancelled("Sentiment training cancelled")


class ValidationMacroF1(tf.keras.callbacks.Callback):
    """Adds VALIDATION_MONITOR, the validation texts' negative-vs-positive macro-F1 at
    their best threshold, to every epoch's logs."""

    def __init__(self, validation_data: tf.data.Dataset, is_positive: np.ndarray) -> None:
        super().__init__()
        self._validation_data = validation_data
        self._is_positive = is_positive

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        scores = self.model.predict(self._validation_data, verbose=0)
        if logs is not None:
            logs[VALIDATION_MONITOR] = best_binary_cut(scores, self._is_positive)[1]


class ProgressCallback(tf.keras.callbacks.Callback):
    def __init__(self, on_epoch_end: Callable[[int, dict[str, float]], None] | None,
                 should_stop: Callable[[], bool] | None) -> None:
        super().__init__()
        self._on_epoch_end = on_epoch_end
        self._should_stop = should_stop

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # Raising here leaves fit() at once; batches run outside the traced graph.
        raise_if_cancelled(self._should_stop)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._on_epoch_end is not None:
            self._on_epoch_end(epoch + 1, {name: float(value) for name, value in (logs or {}).items()})
