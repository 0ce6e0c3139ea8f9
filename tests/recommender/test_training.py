"""`manage.py train <kind> --sync` end to end on planted data, and the promotion rules."""

import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from ingestion.models import EndUser, Event, Item
from recommender.ml.encoder import encoder_installed
from recommender.models import ModelAuditEntry, ModelVersion, TrainingJob
from recommender.training import choose_candidate
from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    register_model,
    serving,
    store_planted_data,
    trained_model,
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
    outcomes: list[float] = []

    def fake_evaluate(*args, **kwargs):
        ndcg = outcomes.pop(0)
        return {"hr@10": ndcg, "ndcg@10": ndcg, "recall@50": ndcg, "coverage": 0.5}

    monkeypatch.setattr(evaluation, "evaluate", fake_evaluate)
    return outcomes


@pytest.fixture
def active_version(serving):
    store_planted_data()
    return register_model(trained_model(), name="rec-active", metrics={"ndcg@10": 0.5})


def test_a_version_that_does_not_beat_the_active_one_stays_candidate(active_version,
                                                                     forced_evaluation):
    forced_evaluation.extend([0.40, 0.10, 0.50])  # model, popularity, active

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
    forced_evaluation.extend([0.60, 0.10, 0.50])

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
    forced_evaluation.extend([0.50, 0.10, 0.50])

    result, _ = _train("recommender")

    assert ModelVersion.objects.get(name=result["model_version"]).status == "candidate"


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


def _store_reviews(texts_and_ratings: list[tuple[str, int]]) -> None:
    user = EndUser.objects.create(user_id="reviewer")
    item = Item.objects.create(item_id="reviewed")
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
    # 30 reviews, but 5 negative ones: the holdout would hold one.
    _store_reviews([("Love it", 5)] * 25 + [("Hate it", 1)] * 5)

    with pytest.raises(CommandError):
        _train("sentiment")

    job = TrainingJob.objects.get()
    assert job.status == "failed"
    assert "leave 1 and 5 in the holdout; at least 2 of each" in job.error
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
