"""train_if_missing and score_sentiment --backfill."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from ingestion.models import Event
from recommender.management.commands import train_if_missing
from recommender.models import ModelVersion
from tests.factories import EventFactory
from tests.recommender.planted import serving  # noqa: F401  (a fixture)

pytestmark = pytest.mark.django_db


@pytest.fixture
def trainings(monkeypatch):
    calls = []

    def fake_call_command(name, kind, **options):
        calls.append((name, kind, options.get("sync")))

    monkeypatch.setattr(train_if_missing, "call_command", fake_call_command)
    return calls


def _version(kind, name, status="candidate"):
    return ModelVersion.objects.create(kind=kind, name=name, status=status, artifact_path="x",
                                       checksum="0" * 64)


def test_train_if_missing_skips_kinds_that_have_a_version(trainings):
    _version("recommender", "rec-1", status="active")
    _version("sentiment", "sent-1", status="candidate")  # a candidate counts too
    out = StringIO()

    call_command("train_if_missing", stdout=out)

    assert trainings == []
    assert out.getvalue().count("skipping") == 2


def test_train_if_missing_trains_only_the_missing_kind(trainings):
    _version("recommender", "rec-1", status="retired")
    out = StringIO()

    call_command("train_if_missing", stdout=out)

    assert trainings == [("train", "sentiment", True)]
    assert "recommender: a trained version exists; skipping." in out.getvalue()


def test_train_if_missing_trains_a_kind_whose_only_versions_are_the_demos_past_ones(
        trainings):
    from recommender.services import store_past_impressions

    # The demo's A/B test: two recommender versions named, none trained here.
    store_past_impressions(impressions=[], version_names=["demo-a", "demo-b"], note="demo")
    _version("sentiment", "sent-1", status="active")

    call_command("train_if_missing", stdout=StringIO())

    assert trainings == [("train", "recommender", True)]


def test_train_if_missing_reports_a_failed_training_and_carries_on(monkeypatch):
    def failing(name, kind, **options):
        raise CommandError("Training failed.")

    monkeypatch.setattr(train_if_missing, "call_command", failing)
    err = StringIO()

    call_command("train_if_missing", stdout=StringIO(), stderr=err)

    assert "recommender: Training failed." in err.getvalue()
    assert "sentiment: Training failed." in err.getvalue()


def test_score_sentiment_backfill_is_idempotent(serving):
    EventFactory(type="review", text="Love it", sentiment_label="positive", sentiment_score=0.9,
                 sentiment_model="vader")
    for n in range(3):
        EventFactory(type="review", text=f"Terrible, broke after {n} days")
    EventFactory(type="view")
    out = StringIO()

    call_command("score_sentiment", backfill=True, stdout=out, stderr=StringIO())
    assert "Scored 3 events." in out.getvalue()
    assert not Event.objects.exclude(text="").filter(sentiment_model="").exists()
    assert set(Event.objects.exclude(text="").values_list("sentiment_label", flat=True)) == {
        "positive", "negative"}

    again = StringIO()
    call_command("score_sentiment", backfill=True, stdout=again, stderr=StringIO())
    assert "Scored 0 events." in again.getvalue()


def test_score_sentiment_needs_backfill_flag(db):
    with pytest.raises(CommandError):
        call_command("score_sentiment", stdout=StringIO())


@pytest.mark.parametrize("batch_size", [0, -5])
def test_score_sentiment_refuses_a_batch_size_that_scores_nothing(batch_size):
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        call_command("score_sentiment", backfill=True, batch_size=batch_size,
                     stdout=StringIO(), stderr=StringIO())
