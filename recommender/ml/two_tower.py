"""Two-tower retrieval model (TensorFlow Recommenders) with a NumPy serving path.

Query tower: user id embedding + attention pooling of the user's last ``history_length``
items (learned per-position recency logits plus a content term, several heads) + mean of
"key=value" trait token embeddings, through a small MLP. Candidate tower: item id
embedding + category + mean title-token embedding, through a linear layer. The item id
table is shared by the history and the candidate side. Both outputs are L2-normalised;
training uses the in-batch softmax of ``tfrs.tasks.Retrieval`` with a temperature, the
log-frequency sampling correction and removal of accidental hits (computed here in
float32, so mixed precision on a GPU leaves the loss alone).

TensorFlow is imported only by the training code: a web process loads a saved model and
computes query embeddings with NumPy from the extracted weights, without TensorFlow.
"""

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recommender.ml.cancellation import TrainingCancelled
from recommender.ml.data import (
    OOV_INDEX,
    PADDING_INDEX,
    RESERVED_INDICES,
    Encoder,
    SequenceExamples,
    build_vocabulary,
    left_padded,
    sequence_examples,
    token_matrix,
    tokenize,
)

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger(__name__)

ARTIFACT_FORMAT = "lodestar-two-tower/1"
WEIGHTS_FILE = "weights.npz"
METADATA_FILE = "metadata.json"
# What tfrs.layers.loss.RemoveAccidentalHits adds to such a logit: float32's lowest / 100.
ACCIDENTAL_HIT_LOGIT = float(np.finfo(np.float32).min) / 100

EpochEndHook = Callable[[int, dict[str, float]], None]
StopCheck = Callable[[], bool]
Traits = Mapping[str, str]


@dataclass(frozen=True)
class TwoTowerConfig:
    """Model and training parameters. ``None`` means "derive from the data size"."""

    embedding_dim: int = 32
    query_hidden_units: int = 256
    attention_heads: int = 2
    history_length: int = 50
    title_length: int = 16
    traits_per_user: int = 8
    temperature: float = 0.1
    learning_rate: float = 3e-3
    batch_size: int | None = None
    max_epochs: int | None = None
    # Epochs without a better validation NDCG before stopping; the learning rate is
    # multiplied by plateau_decay after each of them, to settle into the optimum.
    patience: int = 3
    plateau_decay: float = 0.5
    # Each sampled user's last interaction with a new item is held out for early stopping.
    validation_users: int = 2000
    # Share of training examples whose user (item) id is replaced by the OOV id, so that
    # the OOV rows learn what an unknown user (new item) looks like.
    user_id_dropout: float = 0.05
    item_id_dropout: float = 0.05
    max_users: int = 5_000_000
    max_items: int = 2_000_000
    max_categories: int = 10_000
    max_title_tokens: int = 100_000
    max_trait_tokens: int = 10_000
    seed: int = 0

    def resolved_batch_size(self, n_examples: int) -> int:
        """About 100 steps per epoch, as a power of two in [256, 8192]: more in-batch
        negatives and better throughput on big data, enough updates on small data."""
        if self.batch_size is not None:
            return self.batch_size
        target = max(n_examples / 100, 1)
        return int(min(8192, max(256, 2 ** round(math.log2(target)))))

    def resolved_max_epochs(self, n_examples: int) -> int:
        """Up to 30 epochs, fewer on big data so one run sees ~50M examples at most."""
        if self.max_epochs is not None:
            return self.max_epochs
        return int(min(30, max(3, math.ceil(5e7 / max(n_examples, 1)))))


@dataclass(frozen=True)
class _Vocabularies:
    users: Encoder
    items: Encoder
    categories: Encoder
    title_tokens: Encoder
    trait_tokens: Encoder


@dataclass
class TwoTowerModel:
    """A trained model: vocabularies, extracted weights and the item embedding matrix.

    ``item_ids[i]`` is the id of row ``i`` of ``item_embeddings`` (L2-normalised float32):
    every item seen in training plus catalog items that only have features. The matrix is
    kept column-major: scoring one query against it then streams each embedding dimension
    contiguously, about twice as fast as row-major on a 100,000-item catalog.
    ``row_by_item`` maps an item id to its row.
    """

    config: TwoTowerConfig
    vocabularies: _Vocabularies = field(repr=False)
    weights: dict[str, np.ndarray] = field(repr=False)
    item_ids: np.ndarray = field(repr=False)
    item_embeddings: np.ndarray = field(repr=False)
    row_by_item: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.item_embeddings = np.asfortranarray(self.item_embeddings, dtype=np.float32)
        self.row_by_item = {item: row for row, item in enumerate(self.item_ids.tolist())}

    def query_embeddings(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]],
                         traits: Sequence[Traits | None] | None = None) -> np.ndarray:
        """(n, embedding_dim) L2-normalised float32 query embeddings. Histories are item ids
        oldest to newest; unknown users, items and traits fall back to the OOV rows."""
        features = self.encode_queries(user_ids, histories, traits)
        return _numpy_query_tower(self.weights, features["user"], features["history"],
                                  features["traits"])

    def encode_queries(self, user_ids: Sequence[str], histories: Sequence[Sequence[str]],
                       traits: Sequence[Traits | None] | None = None) -> dict[str, np.ndarray]:
        """The query tower's integer inputs ("user", "history", "traits")."""
        if len(user_ids) != len(histories):
            raise ValueError("user_ids and histories must have the same length")
        if traits is not None and len(traits) != len(user_ids):
            raise ValueError("traits must have one entry per user")
        vocab = self.vocabularies
        length = self.config.history_length
        history_codes = np.zeros((len(histories), length), dtype=np.int32)
        for row, history in enumerate(histories):
            recent = list(history)[-length:]
            history_codes[row] = left_padded([vocab.items.encode_one(item) for item in recent],
                                             length)
        return {
            "user": np.fromiter((vocab.users.encode_one(user) for user in user_ids),
                                dtype=np.int32, count=len(user_ids)),
            "history": history_codes,
            "traits": _trait_matrix(traits if traits is not None else [None] * len(user_ids),
                                    vocab.trait_tokens, self.config.traits_per_user),
        }

    def encode_items(self, items: pd.DataFrame) -> dict[str, np.ndarray]:
        """The candidate tower's integer inputs ("item", "category", "title") for an
        ``item_id, category, title`` frame; unknown ids map to OOV."""
        category_codes, title_codes = _item_feature_codes(items, self.vocabularies,
                                                          self.config.title_length)
        item_codes = self.vocabularies.items.encode(
            np.asarray(items["item_id"].astype(str).tolist(), dtype=object))
        return {"item": item_codes, "category": category_codes, "title": title_codes}

    def score_items(self, query_embeddings: np.ndarray) -> np.ndarray:
        """Exact dot products, (n_queries, n_items), columns aligned with ``item_ids``."""
        return np.asarray(query_embeddings, dtype=np.float32) @ self.item_embeddings.T

    def similar_items(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        """The ``k`` items closest in candidate space (cosine), the item itself excluded;
        empty for an unknown item."""
        row = self.row_by_item.get(item_id)
        if row is None:
            return []
        scores = self.item_embeddings @ self.item_embeddings[row]
        scores[row] = -np.inf
        k = min(k, len(scores) - 1)
        if k <= 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(str(self.item_ids[i]), float(scores[i])) for i in top]

    def embed_new_items(self, items: pd.DataFrame) -> np.ndarray:
        """Candidate embeddings from ``category`` and ``title`` only (the id is treated as
        unknown), rows aligned with ``items``: for items without interactions."""
        features = self.encode_items(items)
        return _numpy_candidate_tower(self.weights, np.full_like(features["item"], OOV_INDEX),
                                      features["category"], features["title"])

    def with_catalog(self, items: pd.DataFrame) -> "TwoTowerModel":
        """This model with rows added for the catalog ``items`` (item_id, category, title)
        it has none for, embedded by embed_new_items: items without interactions when it
        was trained, or added to the catalog since (its unknown-item row learnt what a new
        item looks like). Itself where it has a row for every one."""
        catalog = items.drop_duplicates("item_id", keep="last")
        ids = np.asarray(catalog["item_id"].astype(str).tolist(), dtype=object)
        new = np.fromiter((item not in self.row_by_item for item in ids), dtype=bool,
                          count=len(ids))
        if not new.any():
            return self
        return TwoTowerModel(
            config=self.config, vocabularies=self.vocabularies, weights=self.weights,
            item_ids=np.concatenate([self.item_ids, ids[new].astype(str)]),
            item_embeddings=np.concatenate([self.item_embeddings,
                                            self.embed_new_items(catalog[new])]))

    def scorer(self, item_ids: Sequence[str] | np.ndarray,
               user_traits: Mapping[str, Traits] | None = None,
               ) -> Callable[[Sequence[str], Sequence[Sequence[str]]], np.ndarray]:
        """A ``score_fn`` for ``evaluation.evaluate`` over the catalog ``item_ids``; catalog
        items unknown to this model score -inf (``with_catalog`` first to score them as
        serving does). ``user_traits``: as in training, so users are scored with the
        traits the model learned them with."""
        columns = pd.Index(self.item_ids.astype(object)).get_indexer(
            np.asarray(item_ids, dtype=object))
        known = columns >= 0
        traits = user_traits or {}

        def score(user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
            model_scores = self.score_items(self.query_embeddings(
                user_ids, histories, [traits.get(user) for user in user_ids]))
            aligned = np.full((len(user_ids), len(columns)), -np.inf, dtype=np.float32)
            aligned[:, known] = model_scores[:, columns[known]]
            return aligned

        return score

    def save(self, directory: Path) -> None:
        """Writes ``weights.npz`` (weights, embeddings, vocabularies) and ``metadata.json``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        vocab = self.vocabularies
        arrays = {f"weights/{name}": value for name, value in self.weights.items()}
        arrays.update({
            "vocabulary/users": vocab.users.vocabulary,
            "vocabulary/items": vocab.items.vocabulary,
            "vocabulary/categories": vocab.categories.vocabulary,
            "vocabulary/title_tokens": vocab.title_tokens.vocabulary,
            "vocabulary/trait_tokens": vocab.trait_tokens.vocabulary,
            "item_ids": self.item_ids,
            "item_embeddings": self.item_embeddings,
        })
        with (directory / WEIGHTS_FILE).open("wb") as handle:
            np.savez(handle, **arrays)
        metadata = {
            "format": ARTIFACT_FORMAT,
            "config": asdict(self.config),
            "items": int(len(self.item_ids)),
            "embedding_dim": int(self.item_embeddings.shape[1]),
        }
        (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> "TwoTowerModel":
        directory = Path(directory)
        metadata = json.loads((directory / METADATA_FILE).read_text())
        if metadata.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{directory} is not a {ARTIFACT_FORMAT} artifact")
        known_fields = {f.name for f in fields(TwoTowerConfig)}
        config = TwoTowerConfig(**{key: value for key, value in metadata["config"].items()
                                   if key in known_fields})
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        vocabularies = _Vocabularies(**{
            name: Encoder(arrays[f"vocabulary/{name}"])
            for name in ("users", "items", "categories", "title_tokens", "trait_tokens")
        })
        weights = {name.removeprefix("weights/"): value for name, value in arrays.items()
                   if name.startswith("weights/")}
        return cls(config=config, vocabularies=vocabularies, weights=weights,
                   item_ids=arrays["item_ids"], item_embeddings=arrays["item_embeddings"])


# --- NumPy inference (serving) ---------------------------------------------------------

def _l2_normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.sum(vectors * vectors, axis=-1, keepdims=True))
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def _masked_mean(embeddings: np.ndarray, codes: np.ndarray) -> np.ndarray:
    mask = (codes != PADDING_INDEX).astype(np.float32)[..., None]
    return (embeddings * mask).sum(axis=-2) / np.maximum(mask.sum(axis=-2), 1.0)


def _numpy_query_tower(weights: Mapping[str, np.ndarray], user_codes: np.ndarray,
                       history_codes: np.ndarray, trait_codes: np.ndarray) -> np.ndarray:
    users = weights["user_embedding"][user_codes]
    history = weights["item_embedding"][history_codes]  # (n, length, dim)
    # Per head: recency logit of the position + content logit of the item, softmax over
    # the non-padding positions; an empty history pools to zeros.
    logits = (weights["position_logits"][None, :, :]
              + np.einsum("nld,hd->nhl", history, weights["attention_vectors"]))
    present = (history_codes != PADDING_INDEX)[:, None, :]
    logits = np.where(present, logits, -np.inf)
    peak = np.max(logits, axis=-1, keepdims=True)
    exponentials = np.where(present, np.exp(logits - np.where(np.isfinite(peak), peak, 0.0)), 0.0)
    attention = exponentials / np.maximum(exponentials.sum(axis=-1, keepdims=True), 1e-12)
    pooled = np.einsum("nhl,nld->nhd", attention, history).reshape(len(user_codes), -1)
    traits = _masked_mean(weights["trait_embedding"][trait_codes], trait_codes)
    hidden = np.concatenate([users, pooled, traits], axis=1)
    hidden = np.maximum(hidden @ weights["query_hidden/kernel"] + weights["query_hidden/bias"], 0)
    output = hidden @ weights["query_output/kernel"] + weights["query_output/bias"]
    return _l2_normalise(output)


def _numpy_candidate_tower(weights: Mapping[str, np.ndarray], id_codes: np.ndarray,
                           category_codes: np.ndarray, title_codes: np.ndarray) -> np.ndarray:
    features = np.concatenate([
        weights["item_embedding"][id_codes],
        weights["category_embedding"][category_codes],
        _masked_mean(weights["title_embedding"][title_codes], title_codes),
    ], axis=1)
    output = features @ weights["candidate_output/kernel"] + weights["candidate_output/bias"]
    return _l2_normalise(output)


# --- Feature encoding ------------------------------------------------------------------

def _trait_tokens(traits: Traits | None) -> list[str]:
    if not traits:
        return []
    return [f"{key}={value}".lower() for key, value in sorted(traits.items())]


def _trait_matrix(traits: Sequence[Traits | None], encoder: Encoder, length: int) -> np.ndarray:
    return token_matrix([_trait_tokens(user_traits) for user_traits in traits], encoder, length)


def _item_feature_codes(items: pd.DataFrame, vocab: _Vocabularies,
                        title_length: int) -> tuple[np.ndarray, np.ndarray]:
    categories = (items["category"].fillna("").astype(str).tolist()
                  if "category" in items else [""] * len(items))
    titles = (items["title"].fillna("").astype(str).tolist()
              if "title" in items else [""] * len(items))
    category_codes = vocab.categories.encode(np.asarray(categories, dtype=object))
    title_codes = token_matrix([tokenize(title) for title in titles], vocab.title_tokens,
                               title_length)
    return category_codes, title_codes


def _build_vocabularies(interactions: pd.DataFrame, items: pd.DataFrame | None,
                        user_traits: Mapping[str, Traits] | None,
                        config: TwoTowerConfig) -> _Vocabularies:
    categories: list[str] = []
    title_tokens: list[str] = []
    if items is not None:
        if "category" in items:
            categories = [c for c in items["category"].fillna("").astype(str).tolist() if c]
        if "title" in items:
            title_tokens = [token for title in items["title"].fillna("").astype(str).tolist()
                            for token in tokenize(title)]
    trait_tokens = [token for traits in (user_traits or {}).values()
                    for token in _trait_tokens(traits)]
    return _Vocabularies(
        users=Encoder(build_vocabulary(interactions["user_id"], config.max_users)),
        items=Encoder(build_vocabulary(interactions["item_id"], config.max_items)),
        categories=Encoder(build_vocabulary(categories, config.max_categories)),
        title_tokens=Encoder(build_vocabulary(title_tokens, config.max_title_tokens)),
        trait_tokens=Encoder(build_vocabulary(trait_tokens, config.max_trait_tokens)),
    )


@dataclass(frozen=True)
class _FeatureTables:
    """Side features indexed by encoded id, gathered per batch."""

    item_category: np.ndarray  # (item rows,) int32
    item_title: np.ndarray  # (item rows, title_length) int32
    user_traits: np.ndarray  # (distinct users in the examples, traits_per_user) int32


def _feature_tables(examples: SequenceExamples, items: pd.DataFrame | None,
                    user_traits: Mapping[str, Traits] | None, vocab: _Vocabularies,
                    config: TwoTowerConfig) -> _FeatureTables:
    item_category = np.full(vocab.items.size, OOV_INDEX, dtype=np.int32)
    item_title = np.full((vocab.items.size, config.title_length), PADDING_INDEX, dtype=np.int32)
    if items is not None and len(items):
        known = items.drop_duplicates("item_id", keep="last")
        rows = vocab.items.encode(np.asarray(known["item_id"].astype(str).tolist(), dtype=object))
        in_vocabulary = rows != OOV_INDEX
        category_codes, title_codes = _item_feature_codes(known, vocab, config.title_length)
        item_category[rows[in_vocabulary]] = category_codes[in_vocabulary]
        item_title[rows[in_vocabulary]] = title_codes[in_vocabulary]
    traits = user_traits or {}
    user_trait_codes = _trait_matrix([traits.get(user) for user in examples.distinct_user_ids],
                                     vocab.trait_tokens, config.traits_per_user)
    return _FeatureTables(item_category, item_title, user_trait_codes)


class _BatchBuilder:
    """Cuts feature batches out of the example arrays; histories are built per batch."""

    def __init__(self, examples: SequenceExamples, tables: _FeatureTables,
                 sampling_probability: np.ndarray, config: TwoTowerConfig):
        self.examples = examples
        self.tables = tables
        self.sampling_probability = sampling_probability
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def batch(self, indices: np.ndarray, training: bool) -> dict[str, np.ndarray]:
        examples, tables = self.examples, self.tables
        users = examples.user_codes[indices]
        items = examples.item_codes[indices]
        user_inputs, item_inputs = users, items
        if training:
            user_inputs = self._drop_ids(users, self.config.user_id_dropout)
            item_inputs = self._drop_ids(items, self.config.item_id_dropout)
        return {
            "user": user_inputs,
            "history": examples.histories(indices, self.config.history_length),
            "traits": tables.user_traits[examples.user_keys[indices]],
            "item": item_inputs,
            "category": tables.item_category[items],
            "title": tables.item_title[items],
            "candidate_id": items,
            "sampling_probability": self.sampling_probability[items],
            "weight": examples.weights[indices],
        }

    def _drop_ids(self, codes: np.ndarray, rate: float) -> np.ndarray:
        if rate <= 0:
            return codes
        return np.where(self.rng.random(len(codes)) < rate, OOV_INDEX, codes).astype(np.int32)

    def dataset(self, indices: np.ndarray, batch_size: int, training: bool) -> "tf.data.Dataset":
        import tensorflow as tf

        config = self.config
        int_matrix = {"history": config.history_length, "traits": config.traits_per_user,
                      "title": config.title_length}
        signature = {name: tf.TensorSpec((None, int_matrix[name]), tf.int32) for name in int_matrix}
        signature.update({name: tf.TensorSpec((None,), tf.int32)
                          for name in ("user", "item", "category", "candidate_id")})
        signature.update({name: tf.TensorSpec((None,), tf.float32)
                          for name in ("sampling_probability", "weight")})

        def generate():
            order = self.rng.permutation(indices) if training else indices
            for start in range(0, len(order), batch_size):
                yield self.batch(order[start:start + batch_size], training)

        return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)


def _validation_split(examples: SequenceExamples,
                      config: TwoTowerConfig) -> tuple[np.ndarray, np.ndarray]:
    """Holds out the last interaction with a new item of up to ``validation_users`` users,
    mirroring the leave-last-out evaluation: those users' later interactions (repeats, such
    as the held-out item's own purchase) are in neither part."""
    eligible = examples.last_new_per_user()
    rng = np.random.default_rng(config.seed)
    count = min(config.validation_users, len(eligible))
    validation = np.sort(rng.choice(eligible, size=count, replace=False))
    cut = np.full(examples.user_keys.max(initial=-1) + 1, len(examples), dtype=np.int64)
    cut[examples.user_keys[validation]] = validation
    training = np.flatnonzero(np.arange(len(examples)) < cut[examples.user_keys])
    return training, validation


def _sampling_probabilities(item_codes: np.ndarray, rows: int) -> np.ndarray:
    """Each item's share of training examples: the chance that an in-batch negative is
    that item. Floored at one example so items absent from training stay finite."""
    counts = np.bincount(item_codes, minlength=rows).astype(np.float64)
    return (np.maximum(counts, 1.0) / max(len(item_codes), 1)).astype(np.float32)


def train_two_tower(interactions: pd.DataFrame, *, items: pd.DataFrame | None = None,
                    user_traits: Mapping[str, Traits] | None = None,
                    config: TwoTowerConfig = TwoTowerConfig(),
                    on_epoch_end: EpochEndHook | None = None,
                    should_stop: StopCheck | None = None) -> tuple[TwoTowerModel, dict[str, Any]]:
    """Trains on every (user, items before it) -> item example of ``interactions``.

    ``interactions`` has user_id, item_id, timestamp and weight columns; row order breaks
    timestamp ties; ``weight`` weighs each example in the loss. ``items`` (item_id,
    category, title) gives candidate features and adds catalog items without interactions
    to the output. ``user_traits`` maps user ids to {trait: value}. ``on_epoch_end(epoch,
    logs)`` gets the 1-based epoch number and its losses and validation metrics;
    ``should_stop()`` is polled every batch and ends training with ``TrainingCancelled``.
    """
    import tensorflow as tf

    from recommender.ml.accelerator import configure_accelerator

    missing = {"user_id", "item_id", "timestamp", "weight"} - set(interactions.columns)
    if missing:
        raise ValueError(f"interactions lack the columns {sorted(missing)}")
    if interactions.empty:
        raise ValueError("no interactions to train on")
    tf.random.set_seed(config.seed)
    vocab = _build_vocabularies(interactions, items, user_traits, config)
    examples = sequence_examples(interactions, vocab.users, vocab.items)
    tables = _feature_tables(examples, items, user_traits, vocab, config)
    train_indices, validation_indices = _validation_split(examples, config)
    batch_size = config.resolved_batch_size(len(train_indices))
    max_epochs = config.resolved_max_epochs(len(train_indices))
    builder = _BatchBuilder(examples, tables,
                            _sampling_probabilities(examples.item_codes[train_indices],
                                                    vocab.items.size), config)

    accelerator = configure_accelerator()
    with accelerator.building():
        keras_model = _build_keras_model(_table_sizes(vocab), config)
        # XLA-compiled updates pay off on GPUs; on CPUs the compile time dominates.
        keras_model.compile(optimizer=tf.keras.optimizers.Adam(
            config.learning_rate, jit_compile=accelerator.device == "gpu"))
        # Creating the optimizer slots now spares fit a second trace of the train step.
        keras_model.optimizer.build(keras_model.trainable_variables)
    monitor = _TrainingMonitor(keras_model, builder, validation_indices, config, max_epochs,
                               on_epoch_end, should_stop)
    logger.info("Training two-tower on %d examples (%d held out), batch %d, up to %d epochs",
                len(train_indices), len(validation_indices), batch_size, max_epochs)
    started = time.perf_counter()
    keras_model.fit(
        builder.dataset(train_indices, batch_size, training=True),
        validation_data=(builder.dataset(validation_indices, batch_size, training=False)
                         if len(validation_indices) else None),
        epochs=max_epochs,
        callbacks=[monitor.callback()],
        verbose=0,
    )
    train_seconds = time.perf_counter() - started
    monitor.restore_best()

    model = _extract_model(keras_model, vocab, tables, items, config)
    epochs_run = len(monitor.history)
    report = {
        "epochs_run": epochs_run,
        "max_epochs": max_epochs,
        "best_epoch": monitor.best_epoch,
        "stopped_early": epochs_run < max_epochs,
        "batch_size": batch_size,
        "train_examples": int(len(train_indices)),
        "validation_examples": int(len(validation_indices)),
        "train_seconds": train_seconds,
        "examples_per_second": len(train_indices) * epochs_run / max(train_seconds, 1e-9),
        "final_loss": monitor.history[-1].get("loss") if monitor.history else None,
        "final_val_loss": monitor.history[-1].get("val_loss") if monitor.history else None,
        "best_validation": monitor.best_logs,
        "device": accelerator.device,
        "gpus": accelerator.gpus,
        "mixed_precision": accelerator.mixed_precision,
        "users": len(vocab.users.vocabulary),
        "items": len(model.item_ids),
    }
    return model, report


def _table_sizes(vocab: _Vocabularies) -> dict[str, int]:
    return {"users": vocab.users.size, "items": vocab.items.size,
            "categories": vocab.categories.size, "title_tokens": vocab.title_tokens.size,
            "trait_tokens": vocab.trait_tokens.size}


VALIDATION_MONITOR = "val_ndcg"


class _TrainingMonitor:
    """Per-batch cancel check, per-epoch validation metrics, early stopping with the best
    weights kept in memory, and the caller's progress hook."""

    def __init__(self, keras_model: "tf.keras.Model", builder: _BatchBuilder,
                 validation_indices: np.ndarray, config: TwoTowerConfig, max_epochs: int,
                 on_epoch_end: EpochEndHook | None, should_stop: StopCheck | None):
        self.keras_model = keras_model
        self.builder = builder
        self.validation_indices = validation_indices
        self.config = config
        self.max_epochs = max_epochs
        self.on_epoch_end = on_epoch_end
        self.should_stop = should_stop
        self.history: list[dict[str, float]] = []
        self.best_score = -np.inf
        self.best_epoch = 0
        self.best_logs: dict[str, float] = {}
        self.best_weights: list[np.ndarray] | None = None

    def callback(self) -> "tf.keras.callbacks.Callback":
        import tensorflow as tf

        return tf.keras.callbacks.LambdaCallback(on_train_batch_end=self._after_batch,
                                                 on_epoch_end=self._after_epoch)

    def _after_batch(self, batch: int, logs: dict | None) -> None:
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled("training cancelled")

    def _after_epoch(self, epoch: int, logs: dict | None) -> None:
        epoch_logs = {name: float(value) for name, value in (logs or {}).items()}
        epoch_logs["learning_rate"] = float(self.keras_model.optimizer.learning_rate.numpy())
        if len(self.validation_indices):
            epoch_logs.update(_validation_metrics(self.keras_model, self.builder,
                                                  self.validation_indices))
        score = epoch_logs.get(VALIDATION_MONITOR, -epoch_logs.get("loss", 0.0))
        if score > self.best_score:
            self.best_score, self.best_epoch, self.best_logs = score, epoch + 1, epoch_logs
            self.best_weights = self.keras_model.get_weights()
        elif epoch + 1 - self.best_epoch >= self.config.patience:
            self.keras_model.stop_training = True
        else:
            learning_rate = self.keras_model.optimizer.learning_rate
            learning_rate.assign(learning_rate * self.config.plateau_decay)
        self.history.append(epoch_logs)
        logger.info("Epoch %d/%d: %s", epoch + 1, self.max_epochs,
                    ", ".join(f"{name}={value:.4f}" for name, value in epoch_logs.items()))
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch + 1, {**epoch_logs, "max_epochs": float(self.max_epochs)})

    def restore_best(self) -> None:
        if self.best_weights is not None:
            self.keras_model.set_weights(self.best_weights)


def _validation_metrics(keras_model: "tf.keras.Model", builder: _BatchBuilder,
                        validation_indices: np.ndarray, k: int = 10,
                        recall_k: int = 50) -> dict[str, float]:
    """NDCG (full ranking), HR@k, NDCG@k and recall@recall_k of each held-out example
    against every item in the vocabulary, excluding items the user had before (as in
    ``evaluation``)."""
    import tensorflow as tf

    examples, tables = builder.examples, builder.tables
    item_codes = np.arange(RESERVED_INDICES, len(tables.item_category), dtype=np.int32)
    candidates = tf.concat([
        keras_model.candidate_tower({"item": tf.constant(chunk),
                                     "category": tf.constant(tables.item_category[chunk]),
                                     "title": tf.constant(tables.item_title[chunk])})
        for chunk in np.array_split(item_codes, max(1, len(item_codes) // 65536))
    ], axis=0)
    depth = min(max(k, recall_k), len(item_codes))
    rows_per_chunk = max(1, min(1024, 50_000_000 // max(len(item_codes), 1)))
    hits = np.zeros((0, depth), dtype=bool)
    target_ranks = np.zeros(0, dtype=np.int64)
    for start in range(0, len(validation_indices), rows_per_chunk):
        chunk = validation_indices[start:start + rows_per_chunk]
        features = {name: tf.constant(value)
                    for name, value in builder.batch(chunk, training=False).items()}
        scores = tf.matmul(keras_model.query_tower(features), candidates, transpose_b=True)
        rows, columns = _previous_item_columns(examples, chunk)
        if len(rows):
            scores = tf.tensor_scatter_nd_update(
                scores, np.stack([rows, columns], axis=1),
                tf.fill([len(rows)], tf.constant(-np.inf, scores.dtype)))
        top = tf.math.top_k(scores, k=depth).indices.numpy()
        targets = examples.item_codes[chunk] - RESERVED_INDICES
        hits = np.concatenate([hits, top == targets[:, None]])
        target_scores = tf.gather(scores, np.maximum(targets, 0)[:, None], batch_dims=1)
        ranks = tf.reduce_sum(tf.cast(scores > target_scores, tf.int64), axis=1).numpy()
        # Targets outside the vocabulary rank last.
        target_ranks = np.concatenate([target_ranks,
                                       np.where(targets >= 0, ranks, len(item_codes))])
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return {
        # NDCG over the full ranking: smooth and never saturated, even for tiny catalogs
        # where recall@50 is always 1, so it is what early stopping watches.
        "val_ndcg": float((1.0 / np.log2(target_ranks + 2.0)).mean()),
        f"val_hr@{k}": float(hits[:, :k].any(axis=1).mean()),
        f"val_ndcg@{k}": float((hits[:, :k] * discounts).sum(axis=1).mean()),
        f"val_recall@{recall_k}": float(hits[:, :recall_k].any(axis=1).mean()),
    }


def _previous_item_columns(examples: SequenceExamples,
                           indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row, item column) pairs for every item each example's user had before it."""
    starts = examples.segment_start[indices]
    lengths = indices - starts
    rows = np.repeat(np.arange(len(indices)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    columns = examples.item_codes[np.repeat(starts, lengths) + offsets] - RESERVED_INDICES
    known = columns >= 0
    return rows[known].astype(np.int64), columns[known].astype(np.int64)


def _extract_model(keras_model: "tf.keras.Model", vocab: _Vocabularies, tables: _FeatureTables,
                   items: pd.DataFrame | None, config: TwoTowerConfig) -> TwoTowerModel:
    weights = {name: np.asarray(variable.numpy(), dtype=np.float32)
               for name, variable in keras_model.named_weights().items()}
    item_codes = np.arange(RESERVED_INDICES, vocab.items.size, dtype=np.int32)
    item_ids = vocab.items.vocabulary
    item_embeddings = _numpy_candidate_tower(weights, item_codes, tables.item_category[item_codes],
                                             tables.item_title[item_codes])
    model = TwoTowerModel(config=config, vocabularies=vocab, weights=weights, item_ids=item_ids,
                          item_embeddings=item_embeddings)
    # Catalog items without interactions get feature-only embeddings.
    return model.with_catalog(items) if items is not None and len(items) else model


def keras_model_from(model: TwoTowerModel) -> "tf.keras.Model":
    """Rebuilds the Keras towers holding ``model``'s weights (to check the NumPy serving
    path against TensorFlow, or to continue training)."""
    vocab = model.vocabularies
    keras_model = _build_keras_model(_table_sizes(vocab), model.config)
    for name, variable in keras_model.named_weights().items():
        variable.assign(model.weights[name])
    return keras_model


def _build_keras_model(sizes: Mapping[str, int], config: TwoTowerConfig) -> "tf.keras.Model":
    """The TFRS model. Defined here so TensorFlow is imported only when training."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    dim = config.embedding_dim

    def as_float32(tensor: tf.Tensor) -> tf.Tensor:
        # Under mixed precision layers emit float16; pooling and the outputs stay float32.
        return tf.cast(tensor, tf.float32)

    def retrieval_loss(queries: tf.Tensor, candidates: tf.Tensor,
                       features: Mapping[str, tf.Tensor]) -> tf.Tensor:
        """tfrs.tasks.Retrieval's loss (in-batch softmax with a temperature, the sampling
        correction, accidental hits removed, weighted sum), always in float32: the task is
        a Keras layer, so under mixed_float16 it cast the queries, and then its hit mask
        and its sum, to float16 (a dtype error, or inf and NaN once cast)."""
        scores = tf.matmul(queries, candidates, transpose_b=True) / config.temperature
        scores -= tf.math.log(tf.clip_by_value(
            tf.cast(features["sampling_probability"], tf.float32), 1e-6, 1.0))
        labels = tf.eye(tf.shape(scores)[0], tf.shape(scores)[1])
        ids = features["candidate_id"]
        # Another row of the batch holding a query's own item is no negative of it.
        accidental_hits = tf.cast(tf.equal(ids[:, None], ids[None, :]), tf.float32) - labels
        scores += accidental_hits * ACCIDENTAL_HIT_LOGIT
        return tf.reduce_sum(tf.cast(features["weight"], tf.float32)
                             * tf.nn.softmax_cross_entropy_with_logits(labels, scores))

    def masked_mean(embeddings: tf.Tensor, codes: tf.Tensor) -> tf.Tensor:
        mask = tf.cast(tf.not_equal(codes, PADDING_INDEX), tf.float32)[..., None]
        return tf.reduce_sum(embeddings * mask, axis=-2) / tf.maximum(
            tf.reduce_sum(mask, axis=-2), 1.0)

    class RetrievalModel(tfrs.Model):
        def __init__(self) -> None:
            super().__init__()
            embedding = tf.keras.layers.Embedding
            self.user_embedding = embedding(sizes["users"], dim, name="user_embedding")
            self.item_embedding = embedding(sizes["items"], dim, name="item_embedding")
            self.trait_embedding = embedding(sizes["trait_tokens"], dim, name="trait_embedding")
            self.category_embedding = embedding(sizes["categories"], dim,
                                                name="category_embedding")
            self.title_embedding = embedding(sizes["title_tokens"], dim, name="title_embedding")
            self.position_logits = self.add_weight(
                name="position_logits", shape=(config.attention_heads, config.history_length),
                initializer="zeros", dtype=tf.float32)
            self.attention_vectors = self.add_weight(
                name="attention_vectors", shape=(config.attention_heads, dim),
                initializer="zeros", dtype=tf.float32)
            self.query_hidden = tf.keras.layers.Dense(config.query_hidden_units,
                                                      activation="relu", name="query_hidden")
            self.query_output = tf.keras.layers.Dense(dim, name="query_output")
            self.candidate_output = tf.keras.layers.Dense(dim, name="candidate_output")
            self._build_variables()

        def _build_variables(self) -> None:
            length, traits, title = (config.history_length, config.traits_per_user,
                                     config.title_length)
            zeros = tf.zeros((1,), tf.int32)
            self.query_tower({"user": zeros, "history": tf.zeros((1, length), tf.int32),
                              "traits": tf.zeros((1, traits), tf.int32)})
            self.candidate_tower({"item": zeros, "category": zeros,
                                  "title": tf.zeros((1, title), tf.int32)})

        def query_tower(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
            history_codes = features["history"]
            users = as_float32(self.user_embedding(features["user"]))
            history = as_float32(self.item_embedding(history_codes))
            logits = (self.position_logits[None, :, :]
                      + tf.einsum("nld,hd->nhl", history, self.attention_vectors))
            present = tf.not_equal(history_codes, PADDING_INDEX)[:, None, :]
            logits = tf.where(present, logits, tf.constant(-1e9, tf.float32))
            attention = tf.nn.softmax(logits, axis=-1) * tf.cast(present, tf.float32)
            pooled = tf.einsum("nhl,nld->nhd", attention, history)
            pooled = tf.reshape(pooled, (-1, config.attention_heads * dim))
            traits = masked_mean(as_float32(self.trait_embedding(features["traits"])),
                                 features["traits"])
            hidden = self.query_hidden(tf.concat([users, pooled, traits], axis=1))
            return tf.math.l2_normalize(as_float32(self.query_output(hidden)), axis=1)

        def candidate_tower(self, features: Mapping[str, tf.Tensor]) -> tf.Tensor:
            title = masked_mean(as_float32(self.title_embedding(features["title"])),
                                features["title"])
            inputs = tf.concat([as_float32(self.item_embedding(features["item"])),
                                as_float32(self.category_embedding(features["category"])),
                                title], axis=1)
            return tf.math.l2_normalize(as_float32(self.candidate_output(inputs)), axis=1)

        def compute_loss(self, features: Mapping[str, tf.Tensor], training: bool = False
                         ) -> tf.Tensor:
            return retrieval_loss(self.query_tower(features), self.candidate_tower(features),
                                  features)

        def train_step(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            # optimizer.minimize applies loss scaling when mixed precision wrapped it.
            with tf.GradientTape() as tape:
                loss = self.compute_loss(features, training=True)
            self.optimizer.minimize(loss, self.trainable_variables, tape=tape)
            return {"loss": loss}

        def test_step(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            return {"loss": self.compute_loss(features)}

        def named_weights(self) -> dict[str, tf.Variable]:
            """Variables under the names the NumPy towers and the artifact use."""
            return {
                "user_embedding": self.user_embedding.embeddings,
                "item_embedding": self.item_embedding.embeddings,
                "trait_embedding": self.trait_embedding.embeddings,
                "category_embedding": self.category_embedding.embeddings,
                "title_embedding": self.title_embedding.embeddings,
                "position_logits": self.position_logits,
                "attention_vectors": self.attention_vectors,
                "query_hidden/kernel": self.query_hidden.kernel,
                "query_hidden/bias": self.query_hidden.bias,
                "query_output/kernel": self.query_output.kernel,
                "query_output/bias": self.query_output.bias,
                "candidate_output/kernel": self.candidate_output.kernel,
                "candidate_output/bias": self.candidate_output.bias,
            }

    return RetrievalModel()
