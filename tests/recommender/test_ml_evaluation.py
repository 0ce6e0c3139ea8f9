import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from recommender.ml.evaluation import evaluate, leave_last_out_split, popularity_scorer

CATALOG = ["a", "b", "c", "d", "e"]


def interactions(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [row[0] for row in rows],
        "item_id": [row[1] for row in rows],
        "timestamp": np.array([row[2] for row in rows], dtype=np.int64),
        "weight": np.ones(len(rows)),
    })


def table_scorer(table: dict[str, dict[str, float]], item_ids: Sequence[str]):
    def score(user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.array([[table[user].get(item, -np.inf) for item in item_ids]
                         for user in user_ids])
    return score


# u1 saw a and is tested on b; u2 saw c and is tested on d.
TRAIN = interactions([("u1", "a", 1), ("u2", "c", 1)])
TEST = interactions([("u1", "b", 2), ("u2", "d", 2)])
SCORES = {
    # Without the seen a, u1's ranking is c, b, e, d: b at rank 2.
    "u1": {"a": 5, "b": 3, "c": 4, "d": 1, "e": 2},
    # Without the seen c, u2's ranking is e, b, a, d: d at rank 4.
    "u2": {"a": 1, "b": 2, "c": 9, "d": 0.5, "e": 3},
}


def test_metrics_match_hand_computed_values() -> None:
    metrics = evaluate(table_scorer(SCORES, CATALOG), TRAIN, TEST, CATALOG)
    # HR@10 = 2/2; NDCG@10 = (1/log2(2+1) + 1/log2(4+1)) / 2 = (0.63093 + 0.43068) / 2;
    # every unseen item appears in some top 10, so coverage = 5/5.
    assert metrics == pytest.approx({"hr@10": 1.0, "ndcg@10": 0.530803, "recall@50": 1.0,
                                     "coverage": 1.0}, abs=1e-6)
    assert list(metrics) == ["hr@10", "ndcg@10", "recall@50", "coverage"]


def test_metrics_at_small_cutoffs() -> None:
    metrics = evaluate(table_scorer(SCORES, CATALOG), TRAIN, TEST, CATALOG, k=2, recall_k=3)
    # Top 2: u1 -> c, b (hit at rank 2), u2 -> e, b (miss); top 3 of u2 is e, b, a (miss).
    # HR@2 = 1/2, NDCG@2 = (1/log2(3) + 0) / 2 = 0.315465, recall@3 = 1/2,
    # coverage = |{b, c, e}| / 5 = 0.6.
    assert metrics == pytest.approx({"hr@2": 0.5, "ndcg@2": 0.315465, "recall@3": 0.5,
                                     "coverage": 0.6}, abs=1e-6)
    assert math.isclose(1 / math.log2(3) / 2, 0.315465, abs_tol=1e-6)


def test_items_seen_in_train_are_excluded_so_a_repeat_can_never_hit() -> None:
    train = interactions([("u1", "a", 1)])
    test = interactions([("u1", "a", 2)])
    scores = {"u1": {"a": 100, "b": 1, "c": 1, "d": 1, "e": 1}}
    metrics = evaluate(table_scorer(scores, CATALOG), train, test, CATALOG)
    assert metrics["hr@10"] == 0.0
    assert metrics["coverage"] == pytest.approx(4 / 5)


def test_items_a_model_cannot_score_are_never_recommended() -> None:
    scores = {"u1": {"b": 1.0}, "u2": {"d": 1.0}}
    metrics = evaluate(table_scorer(scores, CATALOG), TRAIN, TEST, CATALOG)
    assert metrics["hr@10"] == 1.0
    assert metrics["coverage"] == pytest.approx(2 / 5)


def test_test_items_outside_the_catalog_count_as_misses() -> None:
    test = interactions([("u1", "b", 2), ("u2", "unknown", 2)])
    metrics = evaluate(table_scorer(SCORES, CATALOG), TRAIN, test, CATALOG)
    assert metrics["hr@10"] == 0.5


def test_score_ties_are_broken_by_catalog_order() -> None:
    train = interactions([("u1", "a", 1)])
    test = interactions([("u1", "c", 2)])
    flat = {"u1": dict.fromkeys(CATALOG, 1.0)}
    # Ranking b, c, d, e: c is second.
    metrics = evaluate(table_scorer(flat, CATALOG), train, test, CATALOG, k=1, recall_k=2)
    assert metrics["hr@1"] == 0.0 and metrics["recall@2"] == 1.0


def test_users_are_scored_in_batches() -> None:
    calls: list[int] = []
    scorer = table_scorer(SCORES, CATALOG)

    def counting(user_ids, histories):
        calls.append(len(user_ids))
        return scorer(user_ids, histories)

    evaluate(counting, TRAIN, TEST, CATALOG, batch_size=1)
    assert calls == [1, 1]


def test_score_fn_receives_time_ordered_train_histories() -> None:
    train = interactions([("u1", "c", 5), ("u1", "a", 1), ("u1", "b", 5)])
    test = interactions([("u1", "d", 9)])
    seen: list[list[str]] = []

    def scorer(user_ids, histories):
        seen.extend(list(history) for history in histories)
        return np.zeros((len(user_ids), len(CATALOG)))

    evaluate(scorer, train, test, CATALOG)
    assert seen == [["a", "c", "b"]]


def test_leave_last_out_takes_the_latest_interaction_and_breaks_ties_by_input_order() -> None:
    frame = interactions([
        ("u1", "late-tie-first", 9), ("u1", "early", 1), ("u1", "late-tie-second", 9),
        ("u2", "only", 3),
        ("u3", "x", 2), ("u3", "y", 1),
    ])
    train, test = leave_last_out_split(frame)
    assert dict(zip(test["user_id"], test["item_id"])) == {"u1": "late-tie-second", "u3": "x"}
    assert sorted(train["item_id"]) == ["early", "late-tie-first", "only", "y"]
    # Rows keep their original order and index.
    assert train.index.tolist() == [0, 1, 3, 5]


def test_popularity_counts_train_interactions() -> None:
    train = interactions([("u1", "b", 1), ("u2", "b", 1), ("u2", "c", 2)])
    scores = popularity_scorer(train, CATALOG)(["u1", "u9"], [["b"], []])
    assert scores.tolist() == [[0, 2, 1, 0, 0]] * 2


def test_leave_last_out_holds_out_the_last_new_item_and_drops_the_repeats_after_it() -> None:
    # u1 viewed a, then b, carted and bought b, then viewed a again: the test item is b, and
    # neither b's cart and purchase nor a's second view may teach a model what was held out.
    frame = interactions([
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "b", 3), ("u1", "b", 4), ("u1", "a", 5),
        ("u2", "c", 1), ("u2", "c", 2),
        ("u3", "d", 1), ("u3", "e", 2),
    ])
    train, test = leave_last_out_split(frame)
    assert dict(zip(test["user_id"], test["item_id"])) == {"u1": "b", "u3": "e"}
    assert train.index.tolist() == [0, 5, 6, 7]


def test_a_repeat_last_interaction_no_longer_counts_as_a_miss() -> None:
    # A perfect model (it ranks each user's next new item first) scores every test user.
    frame = interactions([("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3),
                          ("u2", "c", 1), ("u2", "d", 2), ("u2", "c", 3)])
    train, test = leave_last_out_split(frame)
    next_new = {"u1": "b", "u2": "d"}

    def oracle(user_ids, histories):
        return np.array([[1.0 if item == next_new[user] else 0.0 for item in CATALOG]
                         for user in user_ids])

    assert evaluate(oracle, train, test, CATALOG)["hr@10"] == 1.0
