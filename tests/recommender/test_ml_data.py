from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recommender.ml.data import (
    OOV_INDEX,
    PADDING_INDEX,
    Encoder,
    build_vocabulary,
    left_padded,
    read_interactions,
    sequence_examples,
    token_matrix,
    tokenize,
    user_histories,
)


def interactions(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [row[0] for row in rows],
        "item_id": [row[1] for row in rows],
        "timestamp": np.array([row[2] for row in rows], dtype=np.int64),
        "weight": np.ones(len(rows)),
    })


def assert_expected_frame(frame: pd.DataFrame) -> None:
    assert list(frame.columns) == ["user_id", "item_id", "timestamp", "weight"]
    assert frame["user_id"].tolist() == ["196", "186", "196"]
    assert frame["item_id"].tolist() == ["242", "302", "0042"]
    assert frame["timestamp"].tolist() == [881250949, 891717742, 881250949]
    assert frame["timestamp"].dtype == np.int64
    assert frame["weight"].tolist() == [1.0, 1.0, 1.0]


def test_reads_movielens_u_data(tmp_path: Path) -> None:
    path = tmp_path / "u.data"
    path.write_text("196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t0042\t1\t881250949\n")
    assert_expected_frame(read_interactions(path))


def test_reads_recbole_inter(tmp_path: Path) -> None:
    path = tmp_path / "ml.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t0042\t1\t881250949\n")
    assert_expected_frame(read_interactions(path))


def test_reads_ratings_csv(tmp_path: Path) -> None:
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n"
                    "196,242,3.0,881250949\n186,302,3.5,891717742\n196,0042,1.0,881250949\n")
    assert_expected_frame(read_interactions(path))


def test_fractional_timestamps_stay_float(tmp_path: Path) -> None:
    path = tmp_path / "ml.inter"
    path.write_text("user_id:token\titem_id:token\ttimestamp:float\n1\t2\t10.5\n")
    assert read_interactions(path)["timestamp"].tolist() == [10.5]


def test_vocabulary_is_ordered_by_frequency_then_first_appearance() -> None:
    assert build_vocabulary(["b", "a", "c", "a", "c", "d"]).tolist() == ["a", "c", "b", "d"]
    assert build_vocabulary(["b", "a", "a"], max_size=1).tolist() == ["a"]


def test_encoder_reserves_padding_and_oov() -> None:
    encoder = Encoder(np.array(["x", "y"]))
    assert encoder.size == 4
    assert encoder.encode(["y", "x", "unknown"]).tolist() == [3, 2, OOV_INDEX]
    assert encoder.encode_one("unknown") == OOV_INDEX
    assert encoder.encode_one("x") == 2


def test_token_helpers() -> None:
    assert tokenize("Toy Story (1995), the_movie!") == ["toy", "story", "1995", "the", "movie"]
    encoder = Encoder(np.array(["toy", "story"]))
    assert token_matrix([["toy", "zzz"], []], encoder, 3).tolist() == [[2, OOV_INDEX, 0], [0, 0, 0]]
    assert left_padded([5, 6, 7], 2).tolist() == [6, 7]
    assert left_padded([5], 3).tolist() == [PADDING_INDEX, PADDING_INDEX, 5]


def test_user_histories_are_time_ordered_with_ties_in_input_order() -> None:
    frame = interactions([("u1", "late", 30), ("u2", "only", 5), ("u1", "tie-first", 10),
                          ("u1", "tie-second", 10), ("u1", "early", 1)])
    assert user_histories(frame) == {"u1": ["early", "tie-first", "tie-second", "late"],
                                     "u2": ["only"]}


def test_sequence_examples_histories_hold_only_earlier_items_of_the_same_user() -> None:
    frame = interactions([("u1", "c", 3), ("u2", "a", 1), ("u1", "a", 1), ("u1", "b", 2),
                          ("u2", "d", 2)])
    users = Encoder(build_vocabulary(frame["user_id"]))
    items = Encoder(build_vocabulary(frame["item_id"]))
    examples = sequence_examples(frame, users, items)
    decoded = [items.vocabulary[code - 2] for code in examples.item_codes]
    assert decoded == ["a", "b", "c", "a", "d"]
    histories = examples.histories(np.arange(len(examples)), length=2)
    a, b, d = (items.encode_one(item) for item in "abd")
    assert histories.tolist() == [[0, 0], [0, a], [a, b], [0, 0], [0, a]]
    assert examples.last_new_per_user().tolist() == [2, 4]
    assert examples.distinct_user_ids.tolist() == ["u1", "u2"]
    assert d not in histories


def test_the_last_new_item_per_user_skips_repeats_and_users_without_a_second_item() -> None:
    # u1 viewed a and b, bought b, viewed a again; u2 only ever met c; u3 met d then e.
    frame = interactions([("u1", "a", 1), ("u1", "b", 2), ("u1", "b", 3), ("u1", "a", 4),
                          ("u2", "c", 1), ("u2", "c", 2), ("u3", "d", 1), ("u3", "e", 2)])
    items = Encoder(build_vocabulary(frame["item_id"]))
    examples = sequence_examples(frame, Encoder(build_vocabulary(frame["user_id"])), items)

    held_out = examples.last_new_per_user()

    assert [(examples.distinct_user_ids[examples.user_keys[i]],
             items.vocabulary[examples.item_codes[i] - 2]) for i in held_out] == [
        ("u1", "b"), ("u3", "e")]
    assert held_out.tolist() == sorted(held_out.tolist())


@pytest.mark.parametrize("length", [1, 5])
def test_histories_never_cross_user_boundaries(length: int) -> None:
    frame = interactions([("u1", "a", 1), ("u2", "b", 1), ("u2", "c", 2)])
    users = Encoder(build_vocabulary(frame["user_id"]))
    items = Encoder(build_vocabulary(frame["item_id"]))
    examples = sequence_examples(frame, users, items)
    histories = examples.histories(np.array([1]), length)
    assert (histories == PADDING_INDEX).all()
