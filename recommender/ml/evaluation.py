"""Offline evaluation shared by training jobs and the benchmark (no Django, no TensorFlow).

Protocol: leave-last-out. Each user's chronologically last interaction with an item new
to them is held out, with whatever came after it (interactions with items they had met
before, the held-out item's own cart or purchase among them): every catalog item is ranked
for the user from the history before it; items of that history are excluded from the
ranking. Recommendations are for discovering items, so a repeat (a purchase of an item
viewed earlier), which could never be a hit, is never the test item.
"""

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from recommender.ml.data import chronological_order, user_histories

ScoreFn = Callable[[Sequence[str], Sequence[Sequence[str]]], np.ndarray]
"""score_fn(user_ids, histories) -> (len(user_ids), n_items) scores aligned to the catalog;
histories are item ids oldest to newest. -inf marks items a model cannot score."""

METRIC_KEYS = ("hr@10", "ndcg@10", "recall@50", "coverage")


def leave_last_out_split(interactions: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per user the last interaction (stable sort on timestamp, so ties go to the later
    row) with an item not in their earlier interactions becomes the test row; the user's
    later interactions (repeats of earlier items) are in neither part. Users whose every
    interaction after the first is a repeat stay in train only."""
    order = chronological_order(interactions["user_id"], interactions["timestamp"])
    user_codes = pd.factorize(interactions["user_id"])[0][order]
    item_codes = pd.factorize(interactions["item_id"])[0][order]
    is_first = np.insert(user_codes[1:] != user_codes[:-1], 0, True)
    new_item = ~pd.DataFrame({"user": user_codes, "item": item_codes}).duplicated().to_numpy()
    candidates = np.flatnonzero(new_item & ~is_first)
    # Per user the sorted position of their test row, from which their rows leave training.
    last_new = np.full(user_codes.max(initial=-1) + 1, -1, dtype=np.int64)
    np.maximum.at(last_new, user_codes[candidates], candidates)
    cut = np.where(last_new >= 0, last_new, len(order))
    positions = np.arange(len(order))
    test_mask = np.zeros(len(interactions), dtype=bool)
    train_mask = np.zeros(len(interactions), dtype=bool)
    test_mask[order[positions == cut[user_codes]]] = True
    train_mask[order[positions < cut[user_codes]]] = True
    return interactions[train_mask].copy(), interactions[test_mask].copy()


def evaluate(score_fn: ScoreFn, train: pd.DataFrame, test: pd.DataFrame,
             item_ids: Sequence[str] | np.ndarray, k: int = 10, recall_k: int = 50,
             batch_size: int = 1024) -> dict[str, float]:
    """HR@k, NDCG@k and recall@recall_k averaged over test users, plus catalog coverage
    (share of items appearing in any evaluated user's top k).

    The returned keys are named after the defaults ("hr@10", "ndcg@10", "recall@50").
    Test items outside ``item_ids`` count as misses.
    """
    item_ids = np.asarray(item_ids, dtype=object)
    item_index = pd.Index(item_ids)
    histories = user_histories(train)
    test_items_by_user = test.groupby("user_id", sort=False)["item_id"].agg(list)
    users = test_items_by_user.index.tolist()
    if not users:
        return dict.fromkeys(METRIC_KEYS, 0.0)

    depth = min(max(k, recall_k), len(item_ids))
    discounts = 1.0 / np.log2(np.arange(2, depth + 2))
    hits_at_k = ndcg_at_k = recall_at_r = 0.0
    recommended = np.zeros(len(item_ids), dtype=bool)
    for start in range(0, len(users), batch_size):
        batch_users = users[start:start + batch_size]
        batch_histories = [histories.get(user, []) for user in batch_users]
        scores = np.array(score_fn(batch_users, batch_histories), dtype=np.float64)
        if scores.shape != (len(batch_users), len(item_ids)):
            raise ValueError(f"score_fn returned shape {scores.shape}, expected "
                             f"{(len(batch_users), len(item_ids))}")
        _exclude_seen(scores, batch_histories, item_index)
        ranked, valid = _top_items(scores, depth)
        recommended[ranked[:, :k][valid[:, :k]]] = True
        for row, user in enumerate(batch_users):
            relevant = item_index.get_indexer(test_items_by_user[user])
            relevant = np.unique(relevant[relevant >= 0])
            hit = np.isin(ranked[row], relevant) & valid[row]
            n_relevant = len(set(test_items_by_user[user]))
            ideal = discounts[:min(n_relevant, k)].sum()
            hits_at_k += float(hit[:k].any())
            ndcg_at_k += float(discounts[:k][hit[:k]].sum() / ideal)
            recall_at_r += float(hit[:recall_k].sum() / n_relevant)
    n_users = len(users)
    return {
        f"hr@{k}": hits_at_k / n_users,
        f"ndcg@{k}": ndcg_at_k / n_users,
        f"recall@{recall_k}": recall_at_r / n_users,
        "coverage": float(recommended.sum() / len(item_ids)),
    }


def _exclude_seen(scores: np.ndarray, histories: Sequence[Sequence[str]],
                  item_index: pd.Index) -> None:
    rows = np.repeat(np.arange(len(histories)), [len(history) for history in histories])
    if len(rows) == 0:
        return
    columns = item_index.get_indexer(np.concatenate([np.asarray(h, dtype=object)
                                                     for h in histories if len(h)]))
    known = columns >= 0
    scores[rows[known], columns[known]] = -np.inf


def _top_items(scores: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``depth`` columns per row, best first (ties by lower column), and whether each
    is a real candidate (finite score) rather than an excluded or unscorable item."""
    candidates = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    ranked = np.take_along_axis(candidates, order, axis=1)
    return ranked, np.isfinite(np.take_along_axis(scores, ranked, axis=1))


def popularity_scorer(train: pd.DataFrame, item_ids: Sequence[str] | np.ndarray) -> ScoreFn:
    """Scores every user with the item's interaction count in ``train``."""
    counts = train["item_id"].value_counts()
    popularity = counts.reindex(pd.Index(np.asarray(item_ids, dtype=object)), fill_value=0)
    popularity = popularity.to_numpy(dtype=np.float64)

    def score(user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        return np.broadcast_to(popularity, (len(user_ids), len(popularity)))

    return score
