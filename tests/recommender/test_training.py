"""`manage.py train <kind> --sync` end to end on planted data, and the promotion rules."""

import json
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from ingestion.models import EndUser, Event, Item
from recommender.ml.encoder import encoder_installed
from recommender.models import ModelAuditEntry, ModelVersion, TrainingJob
from recommender.training import choose_candidate
from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    register_model,
    serving,
    store_planted_data,
    trained_model,
    trained_sentiment_model,
)

pytestmark = pytest.mark.django_db


def _train(kind: str) -> tuple[dict, str]:
    out = StringIO()
    call_command("train", kind, sync=True, stdout=out)
    lines = out.getvalue().strip().splitlines()
    return json.loads(lines[-1]), out.getvalue()


# --------------------------------------------------------------------------- recommender


def test_training_on_planted_tastes_beats_popularity_and_becomes_active(serving, settings):
    settings.RECOMMENDER_EMBEDDING_DIM = 16
    store_planted_data()

    result, _ = _train("recommender")

    assert result["status"] == "succeeded"
    version = ModelVersion.objects.get(name=result["model_version"])
    assert version.status == ModelVersion.Status.ACTIVE and version.kind == "recommender"
    metrics, popularity = result["metrics"], version.baseline_metrics["popularity"]
    # About 49 unseen items per user: a random ranking hits the held-out item in its top
    # 10 about a fifth of the time; popularity does no better on planted tastes.
    assert metrics["hr@10"] >= 0.5
    assert metrics["hr@10"] > popularity["hr@10"] and metrics["ndcg@10"] > popularity["ndcg@10"]
    assert version.data_counts["users"] == 40 and version.data_counts["test_users"] == 40
    assert version.params["embedding_dim"] == 16
    assert TrainingJob.objects.get(pk=result["job"]).model_version == version
    assert ModelAuditEntry.objects.filter(version=version, action="auto-promote").exists()


@pytest.fixture
def forced_evaluation(monkeypatch):
    """Training returns the planted model at once and the holdout figures are whatever the
    test says: model, popularity baseline, then the active version (when one loads)."""
    import recommender.ml.evaluation as evaluation
    import recommender.ml.two_tower as two_tower

    model = trained_model()
    monkeypatch.setattr(two_tower, "train_two_tower",
                        lambda *args, **kwargs: (model, {"epochs_run": 1}))
    outcomes = ForcedOutcomes()

    def fake_evaluate(score_fn, train, test, catalog):
        outcomes.test_users.append(sorted(test["user_id"]))
        ndcg = outcomes.pop(0)
        return {"hr@10": ndcg, "ndcg@10": ndcg, "recall@50": ndcg, "coverage": 0.5}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    return outcomes


class ForcedOutcomes(list):
    """The figures evaluate returns, in call order; test_users: the test users of each call."""

    def __init__(self):
        super().__init__()
        self.test_users: list[list[str]] = []


@pytest.fixture
def active_version(serving):
    """An active version trained before any of the stored data arrived."""
    version = register_model(trained_model(), name="rec-active", metrics={"ndcg@10": 0.5})
    store_planted_data(received_at=timezone.now() + timedelta(seconds=1))
    return version


def test_a_version_that_does_not_beat_the_active_one_stays_candidate(active_version,
                                                                     forced_evaluation):
    # model and popularity on the holdout, then model and active on what the active
    # version never saw (here the whole holdout)
    forced_evaluation.extend([0.40, 0.10, 0.40, 0.50])

    result, _ = _train("recommender")

    new = ModelVersion.objects.get(name=result["model_version"])
    assert new.status == ModelVersion.Status.CANDIDATE
    active_version.refresh_from_db()
    assert active_version.status == ModelVersion.Status.ACTIVE
    assert ModelAuditEntry.objects.filter(version=new, action="kept-candidate").exists()
    assert new.baseline_metrics["active"]["version"] == "rec-active"
    assert not forced_evaluation  # the active version was evaluated on the same holdout


def test_a_version_that_beats_the_active_one_and_popularity_is_promoted(active_version,
                                                                       forced_evaluation):
    forced_evaluation.extend([0.60, 0.10, 0.60, 0.50])

    result, _ = _train("recommender")

    new = ModelVersion.objects.get(name=result["model_version"])
    assert new.status == ModelVersion.Status.ACTIVE
    active_version.refresh_from_db()
    assert active_version.status == ModelVersion.Status.RETIRED


def test_a_version_that_does_not_beat_popularity_stays_candidate(serving, forced_evaluation):
    store_planted_data()
    forced_evaluation.extend([0.20, 0.25])  # no active version to compare with

    result, _ = _train("recommender")

    assert ModelVersion.objects.get(name=result["model_version"]).status == "candidate"
    assert not ModelVersion.objects.filter(status="active").exists()


def test_a_tie_with_the_active_version_does_not_promote(active_version, forced_evaluation):
    forced_evaluation.extend([0.50, 0.10, 0.50, 0.50])

    result, _ = _train("recommender")

    assert ModelVersion.objects.get(name=result["model_version"]).status == "candidate"


def test_a_cancel_during_the_evaluation_registers_and_promotes_nothing(
        serving, forced_evaluation, monkeypatch):
    import recommender.ml.evaluation as evaluation
    from recommender import services

    store_planted_data()
    forced_evaluation.extend([0.60, 0.10])
    evaluate = evaluation.evaluate

    def cancelled_meanwhile(*args, **kwargs):
        services.request_cancel(job_id=TrainingJob.objects.get().pk, actor="admin:boss")
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(evaluation, "evaluate", cancelled_meanwhile)

    with pytest.raises(CommandError):
        _train("recommender")

    assert TrainingJob.objects.get().status == "cancelled"
    assert not ModelVersion.objects.exists()


def test_the_score_against_the_active_version_is_the_one_on_what_it_never_saw(
        active_version, forced_evaluation):
    # Better than the active version on the whole holdout, worse where that is fair.
    forced_evaluation.extend([0.60, 0.10, 0.45, 0.50])

    result, _ = _train("recommender")

    new = ModelVersion.objects.get(name=result["model_version"])
    assert new.status == ModelVersion.Status.CANDIDATE
    assert new.baseline_metrics["active"]["ndcg@10"] == 0.50
    assert new.baseline_metrics["active"]["this_version"]["ndcg@10"] == 0.45


def test_the_active_version_is_compared_only_on_held_out_items_it_never_trained_on(
        serving, forced_evaluation):
    store_planted_data()
    active = register_model(trained_model(), name="rec-active", metrics={"ndcg@10": 0.5})
    # Since the active version was trained, six users met an item new to them, and one
    # bought an item they had viewed before it was trained: that purchase is no test item.
    later = timezone.now() + timedelta(seconds=1)
    new_items = ["c1-i00", "c1-i01", "c1-i02", "c2-i00", "c2-i01", "c2-i02"]
    users = [f"u0-0{n}" for n in range(6)]
    for user, item in zip(users, new_items):
        _store_event(user, item, at=datetime(2026, 6, 1, tzinfo=UTC), received_at=later)
    first_item = Event.objects.filter(user__user_id="u3-00").order_by("timestamp").first()
    _store_event("u3-00", first_item.item.item_id, at=datetime(2026, 6, 1, tzinfo=UTC),
                 received_at=later, event_type="purchase")
    forced_evaluation.extend([0.60, 0.10, 0.55, 0.50])

    result, _ = _train("recommender")

    assert forced_evaluation.test_users[2] == forced_evaluation.test_users[3] == users
    assert len(forced_evaluation.test_users[0]) == 40  # the holdout: every user
    new = ModelVersion.objects.get(name=result["model_version"])
    assert new.status == ModelVersion.Status.ACTIVE
    assert new.baseline_metrics["active"]["compared"] == (
        "the 6 test users whose held-out item came after it was trained")
    active.refresh_from_db()
    assert active.status == ModelVersion.Status.RETIRED


def test_a_version_is_not_promoted_over_one_it_cannot_be_compared_with_fairly(
        serving, forced_evaluation):
    # Trained on everything stored: every held-out item was one of its training positives,
    # so beating it there would take luck, and losing would say nothing.
    store_planted_data()
    register_model(trained_model(), name="rec-active", metrics={"ndcg@10": 0.5})
    forced_evaluation.extend([0.60, 0.10])  # model and popularity only

    result, _ = _train("recommender")

    new = ModelVersion.objects.get(name=result["model_version"])
    assert new.status == ModelVersion.Status.CANDIDATE
    assert not forced_evaluation
    entry = ModelAuditEntry.objects.get(version=new, action="kept-candidate")
    assert ("not compared with active rec-active: only the 0 test users whose held-out item "
            "came after it was trained, at least 5 are needed") in entry.note


def test_a_version_records_the_time_span_of_the_interactions_it_trained_on(
        serving, forced_evaluation):
    interactions = store_planted_data()
    # Not an item interaction: later than all of them, and no part of the training data.
    Event.objects.create(event_id=uuid.uuid4(), type="signup",
                         user=EndUser.objects.get(user_id="u0-00"),
                         timestamp=datetime(2026, 9, 1, tzinfo=UTC),
                         received_at=datetime(2026, 9, 1, tzinfo=UTC))
    forced_evaluation.extend([0.60, 0.10])

    result, _ = _train("recommender")

    version = ModelVersion.objects.get(name=result["model_version"])
    assert (version.data_window_start.timestamp(), version.data_window_end.timestamp()) == (
        interactions["timestamp"].min(), interactions["timestamp"].max())


def _store_event(user_id: str, item_id: str, *, at: datetime, received_at: datetime,
                 event_type: str = "view") -> None:
    Event.objects.create(event_id=uuid.uuid4(), type=event_type,
                         user=EndUser.objects.get(user_id=user_id),
                         item=Item.objects.get(item_id=item_id), timestamp=at,
                         received_at=received_at)


def test_too_little_data_fails_the_job_with_a_reason(serving):
    Item.objects.create(item_id="only")

    with pytest.raises(CommandError):
        _train("recommender")

    job = TrainingJob.objects.get()
    assert job.status == "failed" and "at least" in job.error
    assert not ModelVersion.objects.exists()


# --------------------------------------------------------------------------- sentiment

FILLER = ["the", "item", "arrived", "today", "my", "box", "shirt", "colour", "size", "was",
          "this", "order"]


def _store_reviews(texts_and_ratings: list[tuple[str, int]], user_id: str = "reviewer") -> None:
    user = EndUser.objects.create(user_id=user_id)
    item, _ = Item.objects.get_or_create(item_id="reviewed")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    Event.objects.bulk_create([
        Event(event_id=uuid.uuid4(), type="review", user=user, item=item, text=text,
              value=rating, timestamp=start + timedelta(minutes=n),
              received_at=start + timedelta(minutes=n))
        for n, (text, rating) in enumerate(texts_and_ratings)])


def _store_slang_reviews() -> None:
    """120 reviews in invented slang VADER has never seen: "zorp" praise, "blick" complaint."""
    rng = random.Random(5)
    _store_reviews([(_slang("zorp", rng), 5) for _ in range(60)]
                   + [(_slang("blick", rng), 1) for _ in range(60)])


def _slang(word: str, rng: random.Random) -> str:
    words = rng.sample(FILLER, 5)
    return " ".join(words[:2] + [word] + words[2:4] + [word] + words[4:])


def test_a_shop_of_50_reviews_whose_models_do_not_beat_vader_keeps_vader(serving, client_app):
    rng = random.Random(3)
    good = ["I love it, great quality", "Wonderful, excellent and happy with it",
            "Great product, love it", "Amazing! Really good"]
    bad = ["Terrible, I hate it", "Awful quality, horrible", "Bad, broken and sad",
           "Horrible, worst purchase, hate it"]
    _store_reviews([(rng.choice(good), 5) for _ in range(25)]
                   + [(rng.choice(bad), 1) for _ in range(25)])

    result, _ = _train("sentiment")

    version = ModelVersion.objects.get(name=result["model_version"])
    assert version.status == ModelVersion.Status.CANDIDATE
    assert version.baseline_metrics["vader"]["macro_f1"] == 1.0
    response = client_app.post("/api/v1/sentiment", {"texts": ["I love it"]}, format="json")
    assert response.json()["model_version"] == "vader"


def test_a_shop_with_a_handful_of_reviews_keeps_vader(serving, client_app):
    _store_reviews([("Love it", 5)] * 8 + [("Hate it", 1)] * 3)

    with pytest.raises(CommandError):
        _train("sentiment")

    job = TrainingJob.objects.get()
    assert job.status == "failed" and "at least 20" in job.error
    assert not ModelVersion.objects.exists()
    response = client_app.post("/api/v1/sentiment", {"texts": ["I love it"]}, format="json")
    assert response.json()["model_version"] == "vader"


def test_a_shop_with_too_few_negative_reviews_to_hold_out_keeps_vader(serving, client_app):
    # 30 reviews, but 7 negative ones: a fifth of them would be one review.
    _store_reviews([("Love it", 5)] * 23 + [("Hate it", 1)] * 7)

    with pytest.raises(CommandError):
        _train("sentiment")

    job = TrainingJob.objects.get()
    assert job.status == "failed"
    assert "7 negative and 23 positive reviews; at least 8 of each are needed" in job.error
    assert not ModelVersion.objects.exists()
    response = client_app.post("/api/v1/sentiment", {"texts": ["I love it"]}, format="json")
    assert response.json()["model_version"] == "vader"


def test_sentiment_that_beats_vader_becomes_active_and_serves(serving, client_app):
    rng = random.Random(5)
    # Invented slang VADER has never seen: "zorp" is praise, "blick" a complaint.
    _store_reviews([(_slang("zorp", rng), 5) for _ in range(60)]
                   + [(_slang("blick", rng), 1) for _ in range(60)])

    result, _ = _train("sentiment")

    version = ModelVersion.objects.get(name=result["model_version"])
    assert version.status == ModelVersion.Status.ACTIVE
    assert result["metrics"]["macro_f1"] > version.baseline_metrics["vader"]["macro_f1"]
    texts = [_slang("zorp", rng) for _ in range(5)] + [_slang("blick", rng) for _ in range(5)]
    response = client_app.post("/api/v1/sentiment", {"texts": texts}, format="json")
    body = response.json()
    assert body["model_version"] == version.name
    scores = [r["score"] for r in body["results"]]
    assert min(scores[:5]) > max(scores[5:])
    assert [r["label"] for r in body["results"]].count("positive") >= 4


def test_a_retrain_holds_out_no_review_the_version_before_it_learnt_from(serving,
                                                                         monkeypatch):
    monkeypatch.setattr("recommender.ml.encoder.encoder_installed", lambda: False)
    seen = _record_sentiment_splits(monkeypatch)
    _store_slang_reviews()
    _train("sentiment")
    rng = random.Random(9)
    # ("again": no text of the first reviews repeats, so texts tell reviews apart)
    _store_reviews([(_slang("zorp", rng) + " again", 4) for _ in range(60)]
                   + [(_slang("blick", rng) + " again", 2) for _ in range(60)], user_id="second")

    _train("sentiment")

    (first_training, second_training), (first_holdout, second_holdout) = (
        seen.trained, seen.holdouts)
    first, second = ModelVersion.objects.filter(kind="sentiment").order_by("created_at")
    note = ModelAuditEntry.objects.filter(version=second).first().note
    assert f"vs active {first.name}" in note and note.endswith("on the same holdout")
    assert not second_holdout & first_training
    assert first_training <= second_training and first_holdout <= second_holdout


def test_an_active_version_from_before_holdouts_by_event_is_compared_with_a_caveat(
        serving, monkeypatch):
    monkeypatch.setattr("recommender.ml.encoder.encoder_installed", lambda: False)
    register_model(trained_sentiment_model(), name="sentiment-old")  # params without it
    _store_slang_reviews()

    result, _ = _train("sentiment")

    version = ModelVersion.objects.get(name=result["model_version"])
    assert version.params["holdout"] == "by event"
    assert ("the active version predates holdouts chosen by event: it may have trained on "
            "part of it") in version.baseline_metrics["active"]["compared"]


@dataclass
class _Splits:
    trained: list[set[str]] = field(default_factory=list)
    holdouts: list[set[str]] = field(default_factory=list)


def _record_sentiment_splits(monkeypatch) -> _Splits:
    """Records the texts each job trains the n-gram model on, and those it judges it on."""
    from recommender.ml import sentiment

    seen = _Splits()
    train, evaluate = sentiment.train_sentiment, sentiment.evaluate_sentiment

    def recording_train(texts, labels, **kwargs):
        seen.trained.append(set(texts))
        return train(texts, labels, **kwargs)

    def recording_evaluate(model, texts, labels):
        if len(seen.holdouts) < len(seen.trained):  # the new version, before VADER
            seen.holdouts.append(set(texts))
        return evaluate(model, texts, labels)

    monkeypatch.setattr(sentiment, "train_sentiment", recording_train)
    monkeypatch.setattr(sentiment, "evaluate_sentiment", recording_evaluate)
    return seen


@pytest.mark.skipif(not encoder_installed(), reason="sentence encoder not installed")
def test_both_candidates_train_and_the_better_on_validation_is_registered(serving):
    _store_slang_reviews()

    result, _ = _train("sentiment")

    training = ModelVersion.objects.get(name=result["model_version"]).metrics["training"]
    scores = {row["architecture"]: row["selection_macro_f1"] for row in training["candidates"]}
    assert list(scores) == ["encoder", "ngram"]
    assert training["architecture"] == choose_candidate(scores)
    job = TrainingJob.objects.get()
    assert "Candidate encoder: validation macro-F1" in job.log
    assert "Candidate ngram: validation macro-F1" in job.log


def test_the_candidate_with_the_higher_validation_score_wins_and_a_tie_goes_to_the_first():
    assert choose_candidate({"encoder": 0.81, "ngram": 0.86}) == "ngram"
    assert choose_candidate({"encoder": 0.9, "ngram": 0.9}) == "encoder"
    assert choose_candidate({"ngram": 0.7}) == "ngram"


def test_an_unreadable_encoder_skips_its_candidate_and_the_ngram_model_trains(serving,
                                                                             monkeypatch):
    from recommender.ml import encoder_sentiment
    from recommender.ml.encoder import EncoderNotInstalled

    def unreadable():
        raise EncoderNotInstalled("The sentence encoder at model.zip is unreadable")

    monkeypatch.setattr("recommender.ml.encoder.encoder_installed", lambda: True)
    monkeypatch.setattr(encoder_sentiment, "shared_encoder", unreadable)
    _store_slang_reviews()

    result, _ = _train("sentiment")

    training = ModelVersion.objects.get(name=result["model_version"]).metrics["training"]
    assert training["architecture"] == "ngram"
    assert [row["architecture"] for row in training["candidates"]] == ["ngram"]
    assert "Candidate encoder skipped: The sentence encoder at model.zip is unreadable" in (
        TrainingJob.objects.get().log)


def test_without_the_encoder_the_ngram_model_is_the_only_candidate(serving, monkeypatch):
    monkeypatch.setattr("recommender.ml.encoder.encoder_installed", lambda: False)
    _store_slang_reviews()

    result, _ = _train("sentiment")

    training = ModelVersion.objects.get(name=result["model_version"]).metrics["training"]
    assert training["architecture"] == "ngram"
    assert [row["architecture"] for row in training["candidates"]] == ["ngram"]


@pytest.mark.parametrize(("setting", "value", "field", "expected"), [
    ("SENTIMENT_FINE_TUNE", "auto", "fine_tune", None),
    ("SENTIMENT_FINE_TUNE", "always", "fine_tune", True),
    ("SENTIMENT_FINE_TUNE", "never", "fine_tune", False),
    ("SENTIMENT_QUANTIZE", "auto", "quantized", None),
    ("SENTIMENT_QUANTIZE", "never", "quantized", False),
])
def test_the_sentiment_settings_reach_the_encoder_candidate(serving, settings, monkeypatch, setting, value,
                                                            field, expected):
    from recommender.ml import encoder_sentiment
    from recommender.ml.encoder import EncoderNotInstalled

    configs = []

    def recording(texts, labels, *, config, **callbacks):
        configs.append(config)
        raise EncoderNotInstalled("recorded; the n-gram model trains instead")

    setattr(settings, setting, value)
    monkeypatch.setattr(encoder_sentiment, "train_encoder_sentiment", recording)
    monkeypatch.setattr("recommender.ml.encoder.encoder_installed", lambda: True)
    _store_slang_reviews()

    _train("sentiment")

    assert [getattr(config, field) for config in configs] == [expected]
