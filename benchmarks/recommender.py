"""Two-tower vs popularity vs implicit ALS on one interaction file, one leave-last-out split.

    python -m benchmarks.recommender --interactions PATH [--json OUT] [--epochs N]

Every model is scored by ``recommender.ml.evaluation.evaluate`` on the same split: each
user's last interaction with an item new to them is held out, all catalog items are
ranked, items seen in train are excluded. The target is two-tower >= 1.4x ALS on both
HR@10 and NDCG@10.
"""

import os

# implicit's ALS is fastest with single-threaded BLAS (it parallelises itself) and warns
# otherwise; the limit must be in place before NumPy loads OpenBLAS.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import scipy.sparse  # noqa: E402

from recommender.ml.data import read_interactions  # noqa: E402
from recommender.ml.evaluation import (  # noqa: E402
    ScoreFn,
    evaluate,
    leave_last_out_split,
    popularity_scorer,
)
from recommender.ml.two_tower import TwoTowerConfig, train_two_tower  # noqa: E402

TARGET_RATIO_VS_ALS = 1.4
SPLIT = ("leave-last-out: each user's chronologically last interaction (ties by file order) "
         "with an item new to them is the test item, later repeats dropped; users with no "
         "new item after their first stay in train; all catalog items ranked; items seen in "
         "train excluded")
ALS_FACTORS = 64
ALS_ITERATIONS = 15


def als_scorer(train: pd.DataFrame, item_ids: Sequence[str]) -> tuple[ScoreFn, float]:
    """Fits implicit's CPU ALS (64 factors, 15 iterations, library defaults otherwise) on the
    train matrix with summed weights as confidence; returns the scorer and fit seconds."""
    from implicit.cpu.als import AlternatingLeastSquares

    user_index = pd.Index(pd.unique(train["user_id"].astype(object)))
    item_index = pd.Index(np.asarray(item_ids, dtype=object))
    rows = user_index.get_indexer(train["user_id"].astype(object))
    columns = item_index.get_indexer(train["item_id"].astype(object))
    known = columns >= 0
    matrix = scipy.sparse.csr_matrix(
        (train["weight"].to_numpy(dtype=np.float32)[known], (rows[known], columns[known])),
        shape=(len(user_index), len(item_index)))
    matrix.sum_duplicates()
    model = AlternatingLeastSquares(factors=ALS_FACTORS, iterations=ALS_ITERATIONS,
                                    random_state=0)
    started = time.perf_counter()
    model.fit(matrix, show_progress=False)
    seconds = time.perf_counter() - started
    user_factors = np.asarray(model.user_factors)
    item_factors = np.asarray(model.item_factors)

    def score(user_ids: Sequence[str], histories: Sequence[Sequence[str]]) -> np.ndarray:
        positions = user_index.get_indexer(np.asarray(user_ids, dtype=object))
        factors = np.where((positions >= 0)[:, None], user_factors[np.maximum(positions, 0)], 0.0)
        return factors @ item_factors.T

    return score, seconds


def run(interactions_path: Path, epochs: int | None) -> dict[str, Any]:
    interactions = read_interactions(interactions_path)
    train, test = leave_last_out_split(interactions)
    item_ids = pd.unique(interactions["item_id"].astype(object)).astype(str)
    models: dict[str, dict[str, float]] = {}

    started = time.perf_counter()
    popularity = popularity_scorer(train, item_ids)
    seconds = time.perf_counter() - started
    models["popularity"] = _result(evaluate(popularity, train, test, item_ids), seconds,
                                   len(train) / max(seconds, 1e-9))

    als, seconds = als_scorer(train, item_ids)
    models["als"] = _result(evaluate(als, train, test, item_ids), seconds,
                            len(train) * ALS_ITERATIONS / max(seconds, 1e-9))

    config = TwoTowerConfig(max_epochs=epochs) if epochs else TwoTowerConfig()
    model, report = train_two_tower(train, config=config)
    models["two_tower"] = _result(evaluate(model.scorer(item_ids), train, test, item_ids),
                                  report["train_seconds"], report["examples_per_second"])
    models["two_tower"].update({"epochs_run": report["epochs_run"],
                                "best_epoch": report["best_epoch"],
                                "batch_size": report["batch_size"]})

    ratios = {metric: models["two_tower"][metric] / max(models["als"][metric], 1e-12)
              for metric in ("hr@10", "ndcg@10")}
    return {
        "dataset": {"path": str(interactions_path), "interactions": len(interactions),
                    "users": int(interactions["user_id"].nunique()), "items": len(item_ids),
                    "test_users": len(test)},
        "split": SPLIT,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "python": platform.python_version(),
                    "two_tower_device": report["device"], "gpus": report["gpus"]},
        "models": models,
        "targets": {
            "two_tower_over_als_min": TARGET_RATIO_VS_ALS,
            "two_tower_over_als": ratios,
            "met": all(ratio >= TARGET_RATIO_VS_ALS for ratio in ratios.values()),
        },
    }


def _result(metrics: dict[str, float], train_seconds: float,
            examples_per_second: float) -> dict[str, float]:
    return {**metrics, "train_seconds": train_seconds, "examples_per_second": examples_per_second}


def format_table(results: dict[str, Any]) -> str:
    columns = {"hr@10": ".4f", "ndcg@10": ".4f", "recall@50": ".4f", "coverage": ".4f",
               "train_seconds": ".1f", "examples_per_second": ".0f"}
    headers = ["hr@10", "ndcg@10", "recall@50", "coverage", "train_s", "examples/s"]
    lines = [f"{'model':<12}" + "".join(f"{header:>12}" for header in headers)]
    for name in ("two_tower", "als", "popularity"):
        values = results["models"][name]
        lines.append(f"{name:<12}" + "".join(f"{values[column]:>12{spec}}"
                                             for column, spec in columns.items()))
    ratios = results["targets"]["two_tower_over_als"]
    lines.append(f"two_tower / als: hr@10 x{ratios['hr@10']:.2f}, ndcg@10 "
                 f"x{ratios['ndcg@10']:.2f} (target x{TARGET_RATIO_VS_ALS}: "
                 f"{'met' if results['targets']['met'] else 'NOT met'})")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", type=Path, required=True,
                        help="u.data, RecBole .inter or ratings.csv file")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--epochs", type=int, help="two-tower epoch cap (default: from data size)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = run(args.interactions, args.epochs)
    print(format_table(results))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
