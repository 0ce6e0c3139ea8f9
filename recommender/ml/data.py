"""Interaction files and the array form of training data (no Django, no TensorFlow).

An interaction frame has the columns ``user_id`` (str), ``item_id`` (str), ``timestamp``
(int64 seconds or float) and ``weight`` (float). Row order is meaningful: interactions with
the same timestamp are ordered by their position in the frame.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

INTERACTION_COLUMNS = ["user_id", "item_id", "timestamp", "weight"]

# Encoded id 0 pads short histories and token lists; 1 stands for anything outside the
# vocabulary, so ids unseen at training time still get a (shared) embedding.
PADDING_INDEX = 0
OOV_INDEX = 1
RESERVED_INDICES = 2

_TOKEN_PATTERN = re.compile(r"[^\W_]+")


def read_interactions(path: str | Path) -> pd.DataFrame:
    """Reads a MovieLens ``u.data``, a RecBole ``.inter`` or a MovieLens ``ratings.csv`` file.

    Every rating counts as one interaction of weight 1.0: the files record that a user
    consumed an item, and how much to trust each event type is the caller's decision.
    File order is kept, so equal timestamps stay in file order.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        first_line = handle.readline().rstrip("\r\n")
    if ":" in first_line.split("\t")[0]:
        frame = _read_recbole(path, first_line)
    elif "," in first_line and not first_line.split(",")[0].strip().isdigit():
        frame = _read_ratings_csv(path)
    else:
        frame = pd.read_csv(path, sep="\t", header=None, usecols=[0, 1, 3],
                            names=["user_id", "item_id", "timestamp"],
                            dtype={"user_id": str, "item_id": str})
    return _normalise_interactions(frame)


def _read_recbole(path: Path, header: str) -> pd.DataFrame:
    # RecBole headers look like "user_id:token\titem_id:token\trating:float\ttimestamp:float".
    names = [field.split(":")[0] for field in header.split("\t")]
    frame = pd.read_csv(path, sep="\t", skiprows=1, header=None, names=names,
                        dtype={"user_id": str, "item_id": str})
    missing = {"user_id", "item_id", "timestamp"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks the RecBole fields {sorted(missing)}")
    return frame


def _read_ratings_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=str)
    frame = frame.rename(columns={"userId": "user_id", "movieId": "item_id", "itemId": "item_id"})
    missing = {"user_id", "item_id", "timestamp"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}")
    frame["timestamp"] = pd.to_numeric(frame["timestamp"])
    return frame


def _normalise_interactions(frame: pd.DataFrame) -> pd.DataFrame:
    timestamps = frame["timestamp"].to_numpy(dtype=np.float64)
    if np.all(np.isfinite(timestamps)) and np.all(timestamps == np.floor(timestamps)):
        timestamps = timestamps.astype(np.int64)
    return pd.DataFrame({
        "user_id": frame["user_id"].astype(str).str.strip().to_numpy(),
        "item_id": frame["item_id"].astype(str).str.strip().to_numpy(),
        "timestamp": timestamps,
        "weight": np.ones(len(frame), dtype=np.float64),
    })


def chronological_order(user_ids: pd.Series, timestamps: pd.Series) -> np.ndarray:
    """Row positions sorted by user, then time; equal timestamps keep their input order."""
    user_codes, _ = pd.factorize(user_ids)
    # np.lexsort is stable and sorts by the last key first.
    return np.lexsort((timestamps.to_numpy(dtype=np.float64), user_codes))


def user_histories(interactions: pd.DataFrame) -> dict[str, list[str]]:
    """Item ids per user, oldest to newest (ties in input order)."""
    order = chronological_order(interactions["user_id"], interactions["timestamp"])
    users = np.asarray(interactions["user_id"].tolist(), dtype=object)[order]
    items = np.asarray(interactions["item_id"].tolist(), dtype=object)[order]
    starts = _segment_starts(users)
    ends = np.append(starts[1:], len(users))
    return {users[start]: items[start:end].tolist() for start, end in zip(starts, ends)}


def _segment_starts(sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    changes = np.flatnonzero(sorted_keys[1:] != sorted_keys[:-1]) + 1
    return np.concatenate([[0], changes]).astype(np.int64)


def build_vocabulary(values: Sequence[str] | np.ndarray | pd.Series,
                     max_size: int | None = None) -> np.ndarray:
    """Distinct values, most frequent first (ties by first appearance), at most max_size."""
    codes, uniques = pd.factorize(pd.Series(values, dtype=object))
    counts = np.bincount(codes[codes >= 0], minlength=len(uniques))
    vocabulary = np.asarray(uniques, dtype=object)[np.argsort(-counts, kind="stable")]
    if max_size is not None:
        vocabulary = vocabulary[:max_size]
    return vocabulary.astype(str)


class Encoder:
    """Maps string ids to embedding rows: vocabulary[i] -> i + 2, unknown -> OOV_INDEX."""

    def __init__(self, vocabulary: np.ndarray):
        self.vocabulary = np.asarray(vocabulary, dtype=str)
        self._index = pd.Index(self.vocabulary.astype(object))
        self._lookup = {value: position + RESERVED_INDICES
                        for position, value in enumerate(self.vocabulary.tolist())}

    @property
    def size(self) -> int:
        """Embedding rows needed, reserved rows included."""
        return len(self.vocabulary) + RESERVED_INDICES

    def encode(self, values: Sequence[str] | np.ndarray | pd.Series) -> np.ndarray:
        """Vectorised lookup for many values."""
        positions = self._index.get_indexer(np.asarray(values, dtype=object))
        return np.where(positions >= 0, positions + RESERVED_INDICES, OOV_INDEX).astype(np.int32)

    def encode_one(self, value: str) -> int:
        """Dictionary lookup, cheaper than ``encode`` for a handful of values."""
        return self._lookup.get(value, OOV_INDEX)


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens (letters and digits)."""
    return _TOKEN_PATTERN.findall(str(text).lower())


def token_matrix(token_lists: Sequence[Sequence[str]], encoder: Encoder,
                 length: int) -> np.ndarray:
    """Encodes up to ``length`` tokens per row, right-padded with PADDING_INDEX."""
    matrix = np.full((len(token_lists), length), PADDING_INDEX, dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        codes = [encoder.encode_one(token) for token in tokens[:length]]
        matrix[row, :len(codes)] = codes
    return matrix


def left_padded(sequence_codes: Sequence[int], length: int) -> np.ndarray:
    """The last ``length`` codes, left-padded so the most recent is always the last column."""
    row = np.full(length, PADDING_INDEX, dtype=np.int32)
    tail = list(sequence_codes)[-length:] if length else []
    if tail:
        row[length - len(tail):] = tail
    return row


@dataclass(frozen=True)
class SequenceExamples:
    """Interactions sorted by user then time, as encoded arrays.

    Example ``i`` is (user_codes[i], the items before it in the same user's sequence) ->
    item_codes[i]. Histories are cut on demand by ``histories`` rather than stored, so the
    memory stays linear in the number of interactions whatever the history length.
    """

    user_codes: np.ndarray  # int32, per sorted interaction
    item_codes: np.ndarray  # int32
    weights: np.ndarray  # float32
    segment_start: np.ndarray  # int64, index of the user's first interaction
    user_keys: np.ndarray  # int64, position of the user in distinct_user_ids
    distinct_user_ids: np.ndarray  # str

    def __len__(self) -> int:
        return len(self.item_codes)

    def histories(self, example_indices: np.ndarray, length: int) -> np.ndarray:
        """(n, length) int32 matrix of the items preceding each example, left-padded."""
        example_indices = np.asarray(example_indices, dtype=np.int64)
        offsets = np.arange(length, 0, -1, dtype=np.int64)
        positions = example_indices[:, None] - offsets[None, :]
        inside = positions >= self.segment_start[example_indices][:, None]
        gathered = self.item_codes[np.maximum(positions, 0)]
        return np.where(inside, gathered, PADDING_INDEX).astype(np.int32)

    def last_new_per_user(self) -> np.ndarray:
        """Ascending indices of each user's last interaction with an item in the vocabulary
        that is new to them (not their first interaction), for users who have one: what
        leave-last-out holds out (recommender.ml.evaluation)."""
        positions = np.arange(len(self.item_codes))
        repeat = pd.DataFrame({"user": self.user_keys, "item": self.item_codes}).duplicated()
        candidates = np.flatnonzero(~repeat.to_numpy() & (self.item_codes >= RESERVED_INDICES)
                                    & (positions > self.segment_start))
        last = np.full(self.user_keys.max(initial=-1) + 1, -1, dtype=np.int64)
        np.maximum.at(last, self.user_keys[candidates], candidates)
        return last[last >= 0]


def sequence_examples(interactions: pd.DataFrame, user_encoder: Encoder,
                      item_encoder: Encoder) -> SequenceExamples:
    """Sorts interactions into per-user time-ordered sequences and encodes them.

    Ids are factorised first, so each distinct string is looked up once and no per-row
    Python objects are created."""
    user_keys, distinct_user_ids = pd.factorize(interactions["user_id"])
    item_keys, distinct_item_ids = pd.factorize(interactions["item_id"])
    # np.lexsort is stable and sorts by the last key first: user, then time, then row.
    order = np.lexsort((interactions["timestamp"].to_numpy(dtype=np.float64), user_keys))
    user_keys = user_keys[order].astype(np.int64)
    starts = _segment_starts(user_keys)
    lengths = np.diff(np.append(starts, len(user_keys)))
    return SequenceExamples(
        user_codes=user_encoder.encode(np.asarray(distinct_user_ids, dtype=object))[user_keys],
        item_codes=item_encoder.encode(
            np.asarray(distinct_item_ids, dtype=object))[item_keys[order]],
        weights=interactions["weight"].to_numpy(dtype=np.float32)[order],
        segment_start=np.repeat(starts, lengths),
        user_keys=user_keys,
        distinct_user_ids=np.asarray(distinct_user_ids, dtype=object).astype(str),
    )
