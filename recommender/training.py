"""Training pipelines run by jobs: read the shop's data, call the plain ML functions in
recommender.ml (the same ones `benchmarks/` calls), evaluate against the baseline on the
holdout and against the active version on the part of it that version never trained on,
store the artifact and register the version."""

import logging
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from django.conf import settings
from django.utils import timezone

from recommender import selectors
from recommender.artifacts import ArtifactRefused, load_verified_model, save_artifact
from recommender.ml.cancellation import TrainingCancelled
from recommender.models import ModelKind, ModelVersion
from recommender.services import JobReporter, NotEnoughData, register_version

logger = logging.getLogger(__name__)

MIN_RECOMMENDER_TEST_USERS = 5
MIN_SENTIMENT_TEXTS = 20
# Of each side (negative, positive): a fifth of them is held out to judge a new version
# on, and at least 2 (with none held out, a model calling everything positive would beat
# VADER; with one, a single review would decide what the shop serves).
MIN_SENTIMENT_PER_SIDE = 8
MIN_SENTIMENT_HOLDOUT_PER_SIDE = 2
# In a sentiment version's params: its holdout was chosen by event (keyed_split), so a
# later job's holdout holds none of the reviews it trained on.
HOLDOUT_BY_EVENT = {"holdout": "by event"}


def _version_name(kind: str, job_id: int) -> str:
    return f"{kind}-{timezone.now():%Y%m%d-%H%M%S}-j{job_id}"


def _load_active(kind: str):
    """The active version's model to compare a new one with, or None when there is none
    or its artifact is refused (then the new version only has to beat the baseline)."""
    active = selectors.active_version(kind=kind)
    if active is None:
        return None, None
    try:
        return active, load_verified_model(kind=kind, name=active.name,
                                           checksum=active.checksum)
    except (ArtifactRefused, OSError, ValueError, KeyError) as error:
        logger.error("Active %s version %s not compared: %s", kind, active.name, error)
        return active, None


@dataclass
class ActiveComparison:
    """The new version against the active one on test data the active one never trained
    on (`scope`: "the same holdout", or which test users); metrics stay None where there
    was too little of it (`shortfall` says so), and then the new version is not promoted
    over the active one."""

    scope: str
    model_metrics: dict | None = None
    active_metrics: dict | None = None
    shortfall: str = ""


def train_recommender_version(reporter: JobReporter) -> ModelVersion:
    from recommender.ml.evaluation import evaluate, leave_last_out_split, popularity_scorer
    from recommender.ml.two_tower import TwoTowerConfig, train_two_tower

    interactions = selectors.interaction_frame()
    items = selectors.item_feature_frame()
    traits = selectors.user_trait_map()
    if interactions.empty:
        # (leave_last_out_split cannot split an empty frame.)
        reporter.record(data_counts={"interactions": 0, "users": 0, "items": int(len(items)),
                                     "test_users": 0})
        raise NotEnoughData("No item interactions stored yet; at least "
                            f"{MIN_RECOMMENDER_TEST_USERS} users with more than one item "
                            "are needed to train and evaluate.")
    train, test = leave_last_out_split(interactions)
    data_window = _time_span(interactions["timestamp"])
    counts = {"interactions": int(len(interactions)),
              "users": int(interactions["user_id"].nunique()) if len(interactions) else 0,
              "items": int(len(items)), "test_users": int(len(test))}
    reporter.record(data_counts=counts)
    reporter.log(f"Data: {counts}")
    if counts["test_users"] < MIN_RECOMMENDER_TEST_USERS:
        raise NotEnoughData(f"{counts['test_users']} users have interacted with more than "
                            f"one item; at least {MIN_RECOMMENDER_TEST_USERS} are needed to "
                            "train and evaluate.")

    config = TwoTowerConfig(embedding_dim=settings.RECOMMENDER_EMBEDDING_DIM)
    model, report = train_two_tower(train, items=items, user_traits=traits, config=config,
                                    on_epoch_end=reporter.on_epoch_end,
                                    should_stop=reporter.should_stop)
    catalog = np.asarray(items["item_id"].tolist(), dtype=object)
    scorer = model.scorer(catalog, user_traits=traits)
    metrics = evaluate(scorer, train, test, catalog)
    baseline = evaluate(popularity_scorer(train, catalog), train, test, catalog)
    reporter.log(f"Holdout: model {metrics}, popularity {baseline}")
    active, active_model = _load_active(ModelKind.RECOMMENDER)
    comparison = None
    if active_model is not None:
        unseen = _test_rows_received_after(interactions, test, active.created_at.timestamp())
        comparison = ActiveComparison(
            f"the {len(unseen)} test users whose held-out item came after it was trained")
        if len(unseen) >= MIN_RECOMMENDER_TEST_USERS:
            comparison.model_metrics = evaluate(scorer, train, unseen, catalog)
            # Items added since it was trained scored as serving ranks them.
            comparison.active_metrics = evaluate(
                active_model.with_catalog(items).scorer(catalog, user_traits=traits), train,
                unseen, catalog)
        else:
            comparison.shortfall = f"at least {MIN_RECOMMENDER_TEST_USERS} are needed"
        reporter.log(f"Against active {active.name} on {comparison.scope}: model "
                     f"{comparison.model_metrics}, active {comparison.active_metrics}")
    return _store_version(
        reporter, kind=ModelKind.RECOMMENDER, model=model, metric="ndcg@10",
        metrics={**metrics, "training": _json_safe(report)}, baseline={"popularity": baseline},
        baseline_score=baseline["ndcg@10"], active=active, comparison=comparison,
        params=asdict(config), counts=counts, data_window=data_window)


def _test_rows_received_after(interactions: pd.DataFrame, test: pd.DataFrame,
                              moment: float) -> pd.DataFrame:
    """The test rows none of whose user's interactions with that item arrived by `moment`
    (epoch seconds): a version trained at `moment` has never seen them. Leave-last-out
    holds out each user's last new item over all data, so without this most test rows of
    a shop with few new events since are items the active version learnt as positives,
    and no retrain would ever beat it."""
    first_received = interactions.groupby(["user_id", "item_id"], sort=False,
                                          observed=True)["received_at"].min()
    pairs = pd.MultiIndex.from_frame(test[["user_id", "item_id"]])
    return test[first_received.reindex(pairs).to_numpy() > moment]


class TrainedCandidate(NamedTuple):
    config: Any
    model: Any
    report: dict[str, Any]


def choose_candidate(selection_scores: dict[str, float]) -> str:
    """The candidate with the highest validation macro-F1; on a tie the one listed first
    (the encoder, which generalises beyond the words of a small validation slice)."""
    return max(selection_scores, key=lambda name: (selection_scores[name],
                                                   -list(selection_scores).index(name)))


def train_sentiment_version(reporter: JobReporter) -> ModelVersion:
    from recommender.ml.encoder import EncoderNotInstalled, encoder_installed
    from recommender.ml.encoder_sentiment import EncoderSentimentConfig, train_encoder_sentiment
    from recommender.ml.sentiment import (
        SentimentConfig,
        VaderBaseline,
        evaluate_sentiment,
        keyed_split,
        sentiment_labels,
        train_sentiment,
    )

    reviews = selectors.labelled_review_frame()
    data_window = _time_span(reviews["timestamp"])
    texts = np.asarray(reviews["text"].tolist(), dtype=object)
    labels = sentiment_labels(reviews["label"].tolist())
    counts = {label: int((labels == label).sum()) for label in ("negative", "neutral",
                                                                "positive")}
    counts["texts"] = int(len(texts))
    reporter.record(data_counts=counts)
    reporter.log(f"Data: {counts}")
    if len(texts) < MIN_SENTIMENT_TEXTS:
        raise NotEnoughData(f"{len(texts)} labelled texts ({counts['negative']} negative, "
                            f"{counts['positive']} positive); at least {MIN_SENTIMENT_TEXTS} "
                            "are needed. VADER keeps serving.")
    if min(counts["negative"], counts["positive"]) < MIN_SENTIMENT_PER_SIDE:
        raise NotEnoughData(
            f"{counts['negative']} negative and {counts['positive']} positive reviews; at "
            f"least {MIN_SENTIMENT_PER_SIDE} of each are needed to hold some out (at least "
            f"{MIN_SENTIMENT_HOLDOUT_PER_SIDE}) and compare a model with VADER. VADER keeps "
            "serving.")
    # Each review's side is fixed by its event: a review the active version learnt from
    # (on this same split of fewer reviews) is never in this holdout.
    train_texts, test_texts, train_labels, test_labels = keyed_split(
        texts, labels, reviews["event_pk"].to_numpy(),
        min_test=dict.fromkeys(("negative", "positive"), MIN_SENTIMENT_HOLDOUT_PER_SIDE))
    # Both candidates where the encoder is installed: it knows English before it has seen
    # a review and wins for small shops; the n-gram model learns a large shop's own words
    # and can win there (benchmarks/README.md). The better on the validation slice of
    # the training data goes on to the holdout; the holdout itself is not used to choose.
    candidates = {"ngram": (SentimentConfig(), train_sentiment)}
    if encoder_installed():
        fine_tune = {"auto": None, "always": True, "never": False}[settings.SENTIMENT_FINE_TUNE]
        quantized = {"auto": None, "never": False}[settings.SENTIMENT_QUANTIZE]
        candidates = {"encoder": (EncoderSentimentConfig(fine_tune=fine_tune, quantized=quantized),
                                  train_encoder_sentiment),
                      **candidates}
    trained: dict[str, TrainedCandidate] = {}
    for architecture, (config, train) in candidates.items():
        try:
            model, report = train(train_texts, train_labels, config=config,
                                  on_epoch_end=reporter.on_epoch_end,
                                  should_stop=reporter.should_stop)
        except EncoderNotInstalled as error:
            reporter.log(f"Candidate {architecture} skipped: {error}")
            continue
        trained[architecture] = TrainedCandidate(config, model, report)
        reporter.log(f"Candidate {architecture}: validation macro-F1 "
                     f"{report['selection_macro_f1']:.4f}")
    chosen = trained[choose_candidate({name: candidate.report["selection_macro_f1"]
                                       for name, candidate in trained.items()})]
    config, model = chosen.config, chosen.model
    # A list, not a mapping: PostgreSQL's jsonb reorders keys, and the order breaks ties.
    report = {**chosen.report, "candidates": [
        {"architecture": name, "selection_macro_f1": candidate.report["selection_macro_f1"]}
        for name, candidate in trained.items()]}
    metrics = evaluate_sentiment(model, test_texts, test_labels)
    vader = evaluate_sentiment(VaderBaseline(), test_texts, test_labels)
    active, active_model = _load_active(ModelKind.SENTIMENT)
    comparison = None
    if active_model is not None:
        scope = "the same holdout"
        if not HOLDOUT_BY_EVENT.items() <= active.params.items():
            scope += (" (the active version predates holdouts chosen by event: it may have "
                      "trained on part of it)")
        comparison = ActiveComparison(scope, model_metrics=metrics, active_metrics=(
            evaluate_sentiment(active_model, test_texts, test_labels)))
    reporter.log(f"Holdout: model {metrics}, VADER {vader}, active "
                 f"{comparison.active_metrics if comparison else None}")
    return _store_version(
        reporter, kind=ModelKind.SENTIMENT, model=model, metric="macro_f1",
        metrics={**metrics, "training": _json_safe(report)}, baseline={"vader": vader},
        baseline_score=vader["macro_f1"], active=active, comparison=comparison,
        params={**asdict(config), **HOLDOUT_BY_EVENT}, counts=counts,
        data_window=data_window)


def _store_version(reporter: JobReporter, *, kind: str, model, metric: str, metrics: dict,
                   baseline: dict, baseline_score: float, active: ModelVersion | None,
                   comparison: ActiveComparison | None, params: dict, counts: dict,
                   data_window: tuple | None) -> ModelVersion:
    """Registers the new version, promoted if it beats the baseline and, where an active
    version could be loaded (`comparison`), the active one. A cancel asked for during
    the evaluation is honoured here, before anything is registered or promoted."""
    if reporter.should_stop(now=True):
        raise TrainingCancelled("Cancelled before the version was registered.")
    name = _version_name(kind, reporter.job.pk)
    directory, checksum = save_artifact(model, kind=kind, name=name)
    score = metrics[metric]
    beats_baseline = score > baseline_score
    reason = f"{metric} {score:.4f} vs baseline {baseline_score:.4f}"
    if comparison is None:
        beats_active = True
        reason += ", no active version to beat"
    elif comparison.active_metrics is None:
        beats_active = False
        reason += (f", not compared with active {active.name}: only {comparison.scope}, "
                   f"{comparison.shortfall}")
    else:
        new_score, active_score = (comparison.model_metrics[metric],
                                   comparison.active_metrics[metric])
        beats_active = new_score > active_score
        reason += (f", {new_score:.4f} vs active {active.name} {active_score:.4f} "
                   f"on {comparison.scope}")
        baseline = {**baseline, "active": {
            "version": active.name, "compared": comparison.scope,
            **_json_safe(comparison.active_metrics),
            "this_version": _json_safe(comparison.model_metrics)}}
    version = register_version(
        kind=kind, name=name, artifact_path=str(directory), checksum=checksum,
        metrics=_json_safe(metrics), baseline_metrics=_json_safe(baseline),
        params=_json_safe(params), data_counts=counts, data_window=data_window,
        promote_if=beats_baseline and beats_active, reason=reason, compared_with=active)
    reporter.record(metrics=version.metrics)
    return version


def _time_span(epoch_seconds: pd.Series) -> tuple[datetime, datetime] | None:
    """The first and last time of the data a version trains on."""
    if epoch_seconds.empty:
        return None
    return (datetime.fromtimestamp(epoch_seconds.min(), tz=UTC),
            datetime.fromtimestamp(epoch_seconds.max(), tz=UTC))


def _json_safe(value):
    """Metrics as JSON: NumPy scalars to Python, NaN (e.g. ROC AUC with one class) to None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


PIPELINES = {
    ModelKind.RECOMMENDER: train_recommender_version,
    ModelKind.SENTIMENT: train_sentiment_version,
}
