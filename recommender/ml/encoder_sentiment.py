"""Review sentiment on a pretrained sentence encoder: a small TensorFlow head trained on a
shop's reviews over all-MiniLM-L6-v2's mean-pooled embeddings (``recommender.ml.encoder``).

Why: the n-gram model (``recommender.ml.sentiment``) learns English from the shop's own
reviews, which is enough for tens of thousands of them and too little for a few hundred;
the encoder already knows that "runs small" and "too tight" say the same thing.

First the encoder is frozen: every text is embedded once and the head trains on the
cached embeddings in seconds, on a CPU as on a GPU. Where the encoder computes in
bfloat16 (an Ampere-or-later GPU, or a CPU with AMX or AVX512-BF16) and the shop has
enough reviews, copies of the
encoder's top blocks are then fine-tuned together with a copy of that head, and the
fine-tuned model is kept only if it scores a higher macro-F1 on the validation slice
(``fine_tune``). Where LiteRT is installed the frozen head learns on, and the model
scores with, the encoder's int8 copy (``recommender.ml.encoder.QuantizedLayerMeans``,
about twice TensorFlow's rate on a CPU); fine-tuning itself runs in TensorFlow, and the
tuned model is then converted, validated and served int8. Labels, the binary decision
threshold and the neutral band work as for the n-gram model (its module docstring says
how), chosen on a validation slice of the training data. The artifact holds the head, the
thresholds and any fine-tuned blocks, not the encoder: it names the encoder by the sha256
of its weights and refuses to load beside a different one, since the head's inputs would
then mean something else.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import tensorflow as tf
from sklearn.metrics import f1_score

from recommender.ml.accelerator import configure_accelerator
from recommender.ml.encoder import (
    ENCODER_NAME,
    ENCODER_PACKAGE,
    EncoderNotInstalled,
    QuantizedLayerMeans,
    SentenceEncoder,
    quantized_runtime_installed,
    shared_encoder,
)
from recommender.ml.lexicon import NEUTRAL, SentimentScorer, as_text_array
from recommender.ml.sentiment import (
    METADATA_FILENAME,
    VALIDATION_MONITOR,
    ProgressCallback,
    Thresholds,
    ValidationMacroF1,
    balanced_class_weights,
    best_binary_cut,
    choose_thresholds,
    prepare_training_data,
    raise_if_cancelled,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")

HEAD_FILENAME = "head.keras"
TUNED_BLOCKS_FILENAME = "tuned_blocks.npz"
ARCHITECTURE = "encoder"
# 2: the artifact holds fine-tuned blocks, which code that reads only format 1 would
# ignore, serving the tuned head on the frozen encoder's features; it refuses 2 instead.
FROZEN_FORMAT_VERSION = 1
FINE_TUNED_FORMAT_VERSION = 2
# Texts encoded between two checks for a cancelled job: about 20 s on 2 CPU cores.
ENCODE_CHUNK_TEXTS = 1_000


@dataclass(frozen=True)
class EncoderSentimentConfig:
    # Inverse strength of the L2 penalty, as scikit-learn's C: the penalty on the mean
    # loss is 1 / (2 C n), so it weakens as the shop's reviews grow in number.
    inverse_regularisation: float = 0.1
    learning_rate: float = 1e-2
    validation_fraction: float = 0.15
    batch_size: int = 64
    epochs: int = 20
    # A small shop's few batches are repeated within an epoch, so it gets as many updates.
    min_updates_per_epoch: int = 100
    seed: int = 42
    # Fewest validation texts of each pole to choose thresholds on (else 0.5, no band).
    min_threshold_texts: int = 20
    # Texts per TensorFlow encoder call (and per fine-tuning batch): long enough to keep
    # the matrix kernels busy, short enough that padding to the batch's longest text stays
    # cheap. The int8 encoder runs its own QuantizedLayerMeans.TEXTS_PER_CALL.
    encode_batch_size: int = 32
    # Fine-tuning the encoder's top blocks with the head, kept only where it beats the
    # frozen encoder on the validation slice. None: where the encoder computes in
    # bfloat16 (an Ampere-or-later GPU, or a CPU with AMX or AVX512-BF16: one epoch of
    # 13,500 reviews took about 4.5 minutes on 2 AMX cores, where float32 encodes 1.7x
    # slower) and there are at least
    # fine_tune_min_texts training texts (fewer barely move six blocks, and overfit them).
    fine_tune: bool | None = None
    fine_tune_blocks: int = 6
    # Measured on the whole clothing file (validation / holdout macro-F1): 1 epoch
    # 0.877 / 0.879, 2: 0.884 / 0.892, 3: 0.889 / 0.898, 4: 0.888 / 0.897.
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    fine_tune_min_texts: int = 1_000
    # Encode through QuantizedLayerMeans (int8 weights, LiteRT, on the CPU even on a GPU
    # node) for the frozen head's training features and for scoring; None: where LiteRT
    # is installed. The artifact records it, and serving encodes as the model learned.
    quantized: bool | None = None


class EncoderSentimentModel(SentimentScorer):
    """Texts -> encoder embeddings -> head -> p(positive), with the thresholds. A
    fine-tuned model carries its own copies of the encoder's top blocks
    (``tuned_blocks``); the rest of the encoder stays the process's shared one.
    ``quantized`` encodes through the encoder's int8 LiteRT copy, built with the tuned
    blocks when there are any."""

    source = "model"

    def __init__(self, encoder: SentenceEncoder, head: tf.keras.Model, *, decision_threshold: float,
                 negative_threshold: float, positive_threshold: float,
                 encode_batch_size: int = 32, tuned_blocks: Sequence[tf.keras.layers.Layer] = (),
                 quantized: bool = False) -> None:
        self.encoder = encoder
        self.head = head
        self.tuned_blocks = list(tuned_blocks)
        self.quantized = quantized
        self._layer_means = _layer_means_function(encoder, self.tuned_blocks, self.quantized)
        self.decision_threshold = decision_threshold
        self.negative_threshold = negative_threshold
        self.positive_threshold = positive_threshold
        self.encode_batch_size = encode_batch_size
        self._score = tf.function(lambda embeddings: head(embeddings, training=False),
                                  input_signature=[tf.TensorSpec((None, feature_size(encoder)),
                                                                 tf.float32)])

    def with_thresholds(self, thresholds: Thresholds) -> EncoderSentimentModel:
        """A copy with other thresholds that shares this model's encoding function (an int8
        copy of tuned blocks takes seconds to convert) and its traced head."""
        model = copy.copy(self)
        model.decision_threshold = thresholds.decision
        model.negative_threshold = thresholds.negative
        model.positive_threshold = thresholds.positive
        return model

    def predict_positive_proba(self, texts: Iterable[str]) -> np.ndarray:
        return self.scores_of_embeddings(encoder_features(
            self.encoder, as_text_array(texts), _texts_per_call(self.quantized, self.encode_batch_size),
            self._layer_means))

    def scores_of_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        if len(embeddings) == 0:
            return np.zeros(0, dtype=np.float64)
        scores = self._score(tf.constant(embeddings)).numpy().reshape(-1).astype(np.float64)
        # The encoder gives every text a finite embedding, so a NaN here would come from
        # a head that diverged; a neutral score is then more honest than a crash.
        return np.clip(np.nan_to_num(scores, nan=0.5), 0.0, 1.0)

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.head.save(directory / HEAD_FILENAME)
        if self.tuned_blocks:
            np.savez(directory / TUNED_BLOCKS_FILENAME, **{
                f"block{index}_weight{position}": weight
                for index, block in enumerate(self.tuned_blocks)
                for position, weight in enumerate(block.get_weights())})
        metadata = {
            "format_version": FINE_TUNED_FORMAT_VERSION if self.tuned_blocks else FROZEN_FORMAT_VERSION,
            "architecture": ARCHITECTURE,
            "encoder": {"name": ENCODER_NAME, "package": ENCODER_PACKAGE,
                        "sha256": self.encoder.fingerprint, "max_length": self.encoder.max_length},
            "decision_threshold": self.decision_threshold,
            "negative_threshold": self.negative_threshold,
            "positive_threshold": self.positive_threshold,
            "encode_batch_size": self.encode_batch_size,
            "tuned_blocks": len(self.tuned_blocks),
            "quantized": self.quantized,
        }
        (directory / METADATA_FILENAME).write_text(json.dumps(metadata, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path, metadata: dict[str, Any]) -> EncoderSentimentModel:
        if metadata.get("format_version") not in {FROZEN_FORMAT_VERSION, FINE_TUNED_FORMAT_VERSION}:
            raise ValueError(f"Unsupported encoder sentiment format: {metadata.get('format_version')!r}")
        try:
            encoder = shared_encoder()
        except EncoderNotInstalled as error:
            # A ValueError, as for any artifact this process cannot load: serving then
            # refuses this version and keeps answering, instead of failing every request.
            raise ValueError(f"This sentiment version needs the sentence encoder: {error}") from error
        expected = metadata["encoder"]["sha256"]
        if encoder.fingerprint != expected:
            raise ValueError(f"This sentiment model was trained on encoder weights {expected[:12]}..., "
                             f"but the installed {ENCODER_PACKAGE} has {encoder.fingerprint[:12]}...")
        head = tf.keras.models.load_model(Path(directory) / HEAD_FILENAME, compile=False)
        tuned_blocks = encoder.bert.tunable_copy_of_top_blocks(metadata.get("tuned_blocks", 0))
        if tuned_blocks:
            with np.load(Path(directory) / TUNED_BLOCKS_FILENAME) as arrays:
                for index, block in enumerate(tuned_blocks):
                    block.set_weights([arrays[f"block{index}_weight{position}"]
                                       for position in range(len(block.weights))])
        # Scored as it learned: artifacts without the key predate int8 scoring and learned
        # on TensorFlow's features. Where the int8 copy cannot be had, TensorFlow scores
        # the model a little differently (tested within 0.03), which beats refusing it.
        quantized = bool(metadata.get("quantized", False))
        if quantized and not quantized_runtime_installed():
            logger.warning("LiteRT (ai-edge-litert) is not installed: this sentiment version, "
                           "trained on the int8 encoder, is scored in TensorFlow")
            quantized = False
        return int8_or_tensorflow(lambda int8: cls(
            encoder, head, decision_threshold=metadata["decision_threshold"],
            negative_threshold=metadata["negative_threshold"],
            positive_threshold=metadata["positive_threshold"],
            encode_batch_size=metadata["encode_batch_size"], tuned_blocks=tuned_blocks,
            quantized=int8), quantized)


def train_encoder_sentiment(texts: Sequence[str], labels: Sequence[Any], *,
                            config: EncoderSentimentConfig | None = None,
                            on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
                            should_stop: Callable[[], bool] | None = None,
                            encoder: SentenceEncoder | None = None,
                            ) -> tuple[EncoderSentimentModel, dict[str, Any]]:
    """Train the head on ratings or explicit labels; same callbacks and errors as
    ``recommender.ml.sentiment.train_sentiment``. Raises ``EncoderNotInstalled`` when the
    encoder package is missing."""
    config = config or EncoderSentimentConfig()
    started = time.perf_counter()
    data = prepare_training_data(texts, labels, config.validation_fraction, config.seed)
    raise_if_cancelled(should_stop)
    # Before the encoder's variables exist: they would initialise the GPUs, after which
    # memory growth can no longer be set.
    accelerator = configure_accelerator()
    encoder = encoder or shared_encoder()
    # The head learns on the features it will be served: the quantised encoder's where
    # serving uses it.
    quantized, frozen_means = int8_or_tensorflow(
        lambda int8: (int8, _layer_means_function(encoder, (), int8)),
        quantized_runtime_installed() if config.quantized is None else config.quantized,
        required=bool(config.quantized))

    texts_per_call = _texts_per_call(quantized, config.encode_batch_size)
    fit_embeddings = _features_cancellable(encoder, data.binary_fit_texts, texts_per_call, should_stop,
                                           frozen_means)
    validation_embeddings = _features_cancellable(encoder, data.validation_texts, texts_per_call,
                                                  should_stop, frozen_means)
    encode_seconds = time.perf_counter() - started

    tf.keras.utils.set_random_seed(config.seed)
    fit_targets = data.binary_fit_targets
    # The head is a convex problem with its own penalty, so it is trained to convergence
    # (a learning rate decayed to zero over a fixed number of updates) rather than
    # stopped early on a validation slice that, for a small shop, is a handful of texts.
    batches = math.ceil(len(fit_targets) / config.batch_size)
    repeats = math.ceil(config.min_updates_per_epoch / batches)
    with accelerator.building():
        l2 = 1.0 / (2 * config.inverse_regularisation * len(fit_targets))
        head = _build_head(feature_size(encoder), l2)
        schedule = tf.keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=config.epochs * batches * repeats)
        head.compile(optimizer=tf.keras.optimizers.Adam(schedule),
                     loss=tf.keras.losses.BinaryCrossentropy(),
                     metrics=[tf.keras.metrics.AUC(name="auc")])
    train_data = (tf.data.Dataset.from_tensor_slices((fit_embeddings, fit_targets))
                  .shuffle(len(fit_targets), seed=config.seed, reshuffle_each_iteration=True)
                  .batch(config.batch_size).repeat(repeats))
    callbacks: list[tf.keras.callbacks.Callback] = [ProgressCallback(on_epoch_end, should_stop)]
    validation_binary = data.validation_labels != NEUTRAL
    if data.has_validation:
        validation_targets = data.binary_validation_targets
        validation_data = tf.data.Dataset.from_tensor_slices(
            (validation_embeddings[validation_binary], validation_targets)).batch(1024)
        callbacks.insert(0, ValidationMacroF1(validation_data, validation_targets > 0.5))
    history = head.fit(train_data, epochs=config.epochs, callbacks=callbacks, verbose=0,
                       class_weight=balanced_class_weights(fit_targets))

    validation_is_positive = data.binary_validation_targets > 0.5
    chosen = _provisional(encoder, head, config, quantized)
    validation_scores = chosen.scores_of_embeddings(validation_embeddings)
    frozen_selection = best_binary_cut(validation_scores[validation_binary], validation_is_positive)[1]
    tuned_selection = None
    fine_tune_seconds = 0.0
    if _fine_tunes(config, encoder, data.has_validation, len(fit_targets)):
        fine_tune_started = time.perf_counter()
        candidate_blocks, tuned_head = fine_tune(
            encoder, head, data.binary_fit_texts, fit_targets, config,
            on_epoch_end=_after_head_epochs(on_epoch_end, config.epochs), should_stop=should_stop)
        candidate = int8_or_tensorflow(
            lambda int8: _provisional(encoder, tuned_head, config, int8, candidate_blocks), quantized,
            required=bool(config.quantized))
        tuned_scores = candidate.predict_positive_proba(data.validation_texts)
        tuned_selection = best_binary_cut(tuned_scores[validation_binary], validation_is_positive)[1]
        fine_tune_seconds = time.perf_counter() - fine_tune_started
        if tuned_selection > frozen_selection:
            chosen, validation_scores = candidate, tuned_scores
    validation_poles = np.bincount(data.binary_validation_targets.astype(int), minlength=2)
    if validation_poles.min() >= config.min_threshold_texts:
        thresholds = choose_thresholds(validation_scores, data.validation_labels)
    else:
        # A cut placed between a handful of scores is noise; with both classes weighted
        # equally in the loss, 0.5 is the unbiased cut.
        predicted = (validation_scores[validation_binary] >= 0.5).astype(int)
        thresholds = Thresholds(decision=0.5, negative=0.5, positive=0.5, macro_f1=float(f1_score(
            data.binary_validation_targets.astype(int), predicted, average="macro", labels=[0, 1],
            zero_division=0)))
    model = chosen.with_thresholds(thresholds)
    report = {
        "architecture": ARCHITECTURE,
        "encoder": ENCODER_NAME,
        "device": accelerator.device,
        "mixed_precision": accelerator.mixed_precision,
        "class_counts": data.class_counts,
        "train_texts": int(len(fit_targets)),
        "validation_texts": int(validation_binary.sum()) if data.has_validation else 0,
        "threshold_source": ("training" if not data.has_validation
                             else "validation" if validation_poles.min() >= config.min_threshold_texts
                             else "balanced classes"),
        "epochs_run": len(history.history["loss"]),
        "validation_macro_f1": history.history[VALIDATION_MONITOR][-1] if data.has_validation else None,
        "threshold_macro_f1": thresholds.macro_f1,
        "selection_macro_f1": best_binary_cut(validation_scores[validation_binary],
                                              validation_is_positive)[1],
        "precision": encoder.precision,
        "quantized": model.quantized,
        "frozen_selection_macro_f1": frozen_selection,
        "fine_tuned_selection_macro_f1": tuned_selection,
        "fine_tuned_blocks": len(model.tuned_blocks),
        "fine_tune_seconds": fine_tune_seconds,
        "decision_threshold": thresholds.decision,
        "negative_threshold": thresholds.negative,
        "positive_threshold": thresholds.positive,
        "config": asdict(config),
        "encode_seconds": encode_seconds,
        "train_seconds": time.perf_counter() - started,
    }
    logger.info("Encoder sentiment model trained: %s", report)
    return model, report


def _provisional(encoder: SentenceEncoder, head: tf.keras.Model, config: EncoderSentimentConfig,
                 quantized: bool, tuned_blocks: Sequence[tf.keras.layers.Layer] = ()
                 ) -> EncoderSentimentModel:
    """The model before its thresholds are chosen, to score the validation slice."""
    return EncoderSentimentModel(encoder, head, decision_threshold=0.5, negative_threshold=0.5,
                                 positive_threshold=0.5, encode_batch_size=config.encode_batch_size,
                                 tuned_blocks=tuned_blocks, quantized=quantized)


def int8_or_tensorflow(build: Callable[[bool], T], quantized: bool, *, required: bool = False) -> T:
    """build(True) where ``quantized``, else build(False); also build(False) when the int8
    encoder cannot be built (a broken LiteRT install, an op the converter refuses), unless
    it is ``required``: scoring in TensorFlow beats failing a training job or every
    request."""
    if not quantized:
        return build(False)
    try:
        return build(True)
    except Exception:
        if required:
            raise
        logger.exception("The int8 encoder could not be built: TensorFlow encodes instead")
        return build(False)


def _texts_per_call(quantized: bool, encode_batch_size: int) -> int:
    return QuantizedLayerMeans.TEXTS_PER_CALL if quantized else encode_batch_size


def _layer_means_function(encoder: SentenceEncoder, tuned_blocks: Sequence[tf.keras.layers.Layer],
                          quantized: bool) -> Callable | None:
    """How texts are encoded: None for the encoder's own TensorFlow function."""
    if quantized:
        return (encoder.quantized_layer_means_function(tuned_blocks) if tuned_blocks
                else encoder.quantized_layer_means)
    return encoder.layer_means_function(tuned_blocks) if tuned_blocks else None


def _fine_tunes(config: EncoderSentimentConfig, encoder: SentenceEncoder, has_validation: bool,
                fit_texts: int) -> bool:
    # Without a validation slice there is nothing to tell a better fine-tuned model from
    # an overfitted one.
    if not has_validation or config.fine_tune is False:
        return False
    if config.fine_tune:
        return True
    return encoder.precision != "float32" and fit_texts >= config.fine_tune_min_texts


def _after_head_epochs(on_epoch_end: Callable[[int, dict[str, float]], None] | None,
                       head_epochs: int) -> Callable[[int, dict[str, float]], None] | None:
    """Progress of fine-tuning, numbered on from the head's epochs."""
    if on_epoch_end is None:
        return None
    return lambda epoch, logs: on_epoch_end(head_epochs + epoch, logs)


def fine_tune(encoder: SentenceEncoder, head: tf.keras.Model, texts: np.ndarray, targets: np.ndarray,
              config: EncoderSentimentConfig, *,
              on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
              should_stop: Callable[[], bool] | None = None,
              ) -> tuple[list[tf.keras.layers.Layer], tf.keras.Model]:
    """Copies of the encoder's top ``config.fine_tune_blocks`` blocks and of the trained
    head, trained together on the texts (balanced classes, Adam with a cosine-decayed
    learning rate). The shared encoder is not changed. Measured on the clothing reviews
    (benchmarks/README.md): the frozen encoder's layers keep too little of a review's
    sentiment for 0.90 macro-F1; tuning the top two blocks alone gained nothing, all six
    gained 0.04. It runs on one device, outside any multi-GPU strategy: six small blocks
    gain little from being mirrored."""
    if not 1 <= config.fine_tune_blocks <= len(encoder.bert.blocks):
        raise ValueError(f"fine_tune_blocks must be 1 to {len(encoder.bert.blocks)}, "
                         f"not {config.fine_tune_blocks}")
    tf.keras.utils.set_random_seed(config.seed)
    blocks = encoder.bert.tunable_copy_of_top_blocks(config.fine_tune_blocks)
    tuned_head = tf.keras.models.clone_model(head)
    tuned_head.set_weights(head.get_weights())
    batches = [(token_ids, mask, targets[positions].astype(np.float32)) for positions, token_ids, mask
               in encoder.padded_batches(texts.tolist(), config.encode_batch_size)]
    optimizer = tf.keras.optimizers.Adam(tf.keras.optimizers.schedules.CosineDecay(
        config.fine_tune_learning_rate, decay_steps=config.fine_tune_epochs * len(batches)))
    class_weights = balanced_class_weights(targets)
    variables = [variable for block in blocks for variable in block.trainable_variables]
    variables += tuned_head.trainable_variables
    ids_spec = tf.TensorSpec((None, None), tf.int32)

    # No Python control flow inside: autograph has nothing to convert.
    @tf.function(input_signature=[ids_spec, ids_spec, tf.TensorSpec((None,), tf.float32)], autograph=False)
    def train_step(token_ids: tf.Tensor, mask: tf.Tensor, batch_targets: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            features = encoder.bert((token_ids, mask), training=True, top_blocks=blocks)
            probability = tuned_head(tf.reshape(features, (tf.shape(token_ids)[0], -1)), training=True)
            weights = batch_targets * class_weights[1] + (1.0 - batch_targets) * class_weights[0]
            loss = tf.reduce_mean(weights * tf.keras.losses.binary_crossentropy(
                batch_targets[:, tf.newaxis], probability))
            loss += tf.add_n(tuned_head.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    order = np.random.default_rng(config.seed)
    for epoch in range(config.fine_tune_epochs):
        losses = []
        for index in order.permutation(len(batches)):
            raise_if_cancelled(should_stop)
            losses.append(float(train_step(*(tf.constant(part) for part in batches[index]))))
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, {"fine_tune_loss": float(np.mean(losses))})
    return blocks, tuned_head


def encoder_features(encoder: SentenceEncoder, texts: np.ndarray, batch_size: int,
                     layer_means: Callable | None = None) -> np.ndarray:
    """What the head reads: every layer's mean token state, side by side."""
    return encoder.layer_means(texts.tolist(), batch_size, layer_means).reshape(
        len(texts), feature_size(encoder))


def _features_cancellable(encoder: SentenceEncoder, texts: np.ndarray, texts_per_call: int,
                          should_stop: Callable[[], bool] | None,
                          layer_means: Callable | None) -> np.ndarray:
    """encoder_features in chunks, polling ``should_stop`` between them: encoding a large
    shop's reviews takes minutes on a CPU, and a cancelled job should end within seconds."""
    chunks = [np.zeros((0, feature_size(encoder)), dtype=np.float32)]
    for start in range(0, len(texts), ENCODE_CHUNK_TEXTS):
        raise_if_cancelled(should_stop)
        chunks.append(encoder_features(encoder, texts[start:start + ENCODE_CHUNK_TEXTS],
                                       texts_per_call, layer_means))
    return np.concatenate(chunks)


def feature_size(encoder: SentenceEncoder) -> int:
    return (len(encoder.bert.blocks) + 1) * encoder.dimension


def _build_head(feature_count: int, l2: float) -> tf.keras.Model:
    """Features -> p(positive): logistic regression with an L2 penalty. Measured on the
    clothing reviews against a hidden layer of 64 or 256 units: as good on the whole
    file and better on 3,000 reviews, where a hidden layer overfits; standardising the
    features first scored lower at every size but one."""
    features = tf.keras.Input(shape=(feature_count,), dtype="float32", name="features")
    # float32 even under mixed precision: one layer gains nothing from float16, and the
    # saved head then scores the same on a CPU.
    probability = tf.keras.layers.Dense(1, activation="sigmoid", dtype="float32",
                                        kernel_regularizer=tf.keras.regularizers.L2(l2))(features)
    return tf.keras.Model(features, probability, name="sentiment_head")


def load_sentiment_model(directory: Path) -> SentimentScorer:
    """Either kind of sentiment artifact: encoder + head, or the n-gram model."""
    from recommender.ml.sentiment import SentimentModel

    metadata = json.loads((Path(directory) / METADATA_FILENAME).read_text())
    architecture = metadata.get("architecture", "ngram")  # n-gram artifacts predate the key
    if architecture == ARCHITECTURE:
        return EncoderSentimentModel.load(directory, metadata)
    if architecture != "ngram":
        raise ValueError(f"Unknown sentiment artifact architecture: {architecture!r}")
    return SentimentModel.load(directory)
