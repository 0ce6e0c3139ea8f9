"""Review text is scored after ingestion (signal on commit -> task -> score_events)."""

import uuid
from datetime import timedelta

import hypothesis
import pytest
from hypothesis import strategies as st

from ingestion.models import Event
from recommender import tasks
from recommender.sentiment_scoring import (
    backfill_missing_scores,
    count_missing_scores,
    score_events,
)
from tests.factories import EventFactory
from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    NASTY_TEXTS,
    sentiment_serving,
    serving,
)

pytestmark = pytest.mark.django_db


def _post(client, events):
    response = client.post("/api/v1/events", {"batch": events}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def _review(text, user="u1", item="i1", value=5):
    return {"event_id": str(uuid.uuid4()), "type": "review", "user_id": user, "item_id": item,
            "value": value, "text": text}


def test_a_posted_review_is_scored_by_vader_after_commit(client_app, serving,
                                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = _post(client_app, [
            _review("Absolutely love it, great quality!"),
            _review("Horrible. It broke on day one, I hate it.", value=1),
            {"type": "view", "user_id": "u1", "item_id": "i1"},
        ])

    assert result["accepted"] == 3 and len(callbacks) == 1
    positive = Event.objects.get(text__startswith="Absolutely")
    negative = Event.objects.get(text__startswith="Horrible")
    view = Event.objects.get(type="view")
    assert (positive.sentiment_label, positive.sentiment_model) == ("positive", "vader")
    assert (negative.sentiment_label, negative.sentiment_model) == ("negative", "vader")
    assert positive.sentiment_score > 0.5 > negative.sentiment_score
    assert (view.sentiment_label, view.sentiment_model, view.sentiment_score) == ("", "", None)


def test_a_reviews_headline_is_scored_with_its_text(client_app, serving,
                                                    django_capture_on_commit_callbacks):
    body = "I wore it to a wedding on Saturday."
    with django_capture_on_commit_callbacks(execute=True):
        _post(client_app, [{**_review(body, value=1),
                            "properties": {"review_title": "Terrible, awful fabric"}},
                           _review(body, user="u2", value=1)])

    headed = Event.objects.get(user__user_id="u1")
    plain = Event.objects.get(user__user_id="u2")
    assert headed.text == body and headed.sentiment_label == "negative"
    assert plain.sentiment_label != "negative"


def test_a_review_with_a_headline_and_no_body_is_scored(client_app, serving,
                                                        django_capture_on_commit_callbacks):
    headline_only = {**_review("", value=1),
                     "properties": {"review_title": "Terrible, awful fabric"}}
    view = {"type": "view", "user_id": "u2", "item_id": "i1",
            "properties": {"review_title": "Terrible, awful fabric"}}
    with django_capture_on_commit_callbacks(execute=True):
        _post(client_app, [headline_only, view])

    review = Event.objects.get(type="review")
    assert (review.text, review.sentiment_label, review.sentiment_model) == (
        "", "negative", "vader")
    # Only reviews and ratings have headlines; a view's properties are the client's own.
    assert Event.objects.get(type="view").sentiment_model == ""


def test_nothing_is_scored_before_commit(client_app, serving,
                                         django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        _post(client_app, [_review("Great!")])

    assert len(callbacks) == 1
    assert Event.objects.get().sentiment_model == ""


def test_a_duplicate_review_is_not_scored_again(client_app, serving,
                                                django_capture_on_commit_callbacks):
    review = _review("Love it")
    with django_capture_on_commit_callbacks(execute=True):
        _post(client_app, [review])
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert _post(client_app, [review])["duplicates"] == 1

    assert callbacks == []  # nothing new was stored, so nothing is scored again
    assert Event.objects.count() == 1


def test_a_broker_outage_does_not_fail_ingestion(client_app, serving, monkeypatch,
                                                 django_capture_on_commit_callbacks):
    def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.score_event_sentiment, "apply_async", broker_down)

    with django_capture_on_commit_callbacks(execute=True):
        result = _post(client_app, [_review("Lovely")])

    assert result["accepted"] == 1
    event = Event.objects.get()
    assert event.sentiment_model == ""  # left for the periodic sweep
    assert tasks.score_missed_sentiment.apply().get() == 0  # its task may still be queued
    Event.objects.update(received_at=event.received_at - timedelta(minutes=2))
    assert tasks.score_missed_sentiment.apply().get() == 1
    event.refresh_from_db()
    assert event.sentiment_model == "vader"


def test_score_events_skips_events_without_text(serving):
    with_text = EventFactory(type="review", text="Fine, I guess. Good enough.", value=4)
    without = EventFactory(type="view")

    assert score_events(event_pks=[with_text.pk, without.pk]) == 1

    with_text.refresh_from_db()
    without.refresh_from_db()
    assert with_text.sentiment_model == "vader" and with_text.sentiment_label
    assert without.sentiment_model == ""


def test_a_review_scored_once_keeps_its_score_when_its_task_runs_again(sentiment_serving):
    # Scored by VADER before the model was trained; the task delivered again (a worker
    # crash after the write, or the sweep beside the task queued for it) finds it scored.
    review = EventFactory(type="review", text="Lovely soft dress", value=5,
                          sentiment_label="neutral", sentiment_score=0.5,
                          sentiment_model="vader")

    assert score_events(event_pks=[review.pk]) == 0

    review.refresh_from_db()
    assert (review.sentiment_model, review.sentiment_label) == ("vader", "neutral")


def test_a_batch_the_scorer_fails_on_does_not_hold_up_the_reviews_after_it(serving,
                                                                           monkeypatch):
    from recommender import sentiment_scoring

    events = [EventFactory(type="review", text=f"Review {n}", value=4) for n in range(4)]
    score = sentiment_scoring.score_events

    def failing_on_the_first(*, event_pks):
        if events[0].pk in event_pks:
            raise ValueError("the scorer cannot read this batch")
        return score(event_pks=event_pks)

    monkeypatch.setattr(sentiment_scoring, "score_events", failing_on_the_first)

    assert backfill_missing_scores(batch_size=2) == 2

    assert count_missing_scores() == 2  # the failed batch, for the next sweep


def test_backfill_scores_only_missing_ones_in_batches(serving):
    scored = EventFactory(type="review", text="great", sentiment_label="negative",
                          sentiment_score=0.1, sentiment_model="sentiment-old")
    missing = [EventFactory(type="review", text=f"great value {n}") for n in range(5)]
    batches = []

    assert backfill_missing_scores(batch_size=2, on_batch=batches.append) == 5
    assert batches == [2, 2, 1]
    scored.refresh_from_db()
    assert scored.sentiment_model == "sentiment-old" and scored.sentiment_label == "negative"
    assert all(Event.objects.get(pk=e.pk).sentiment_model == "vader" for e in missing)
    assert backfill_missing_scores() == 0


def test_the_sweep_finds_headlines_without_a_body(serving):
    headline_only = EventFactory(type="rating", text="", value=5,
                                 properties={"review_title": "Love it, perfect fit"})
    EventFactory(type="rating", text="", value=4, properties={"label": "positive"})
    assert count_missing_scores() == 1

    assert backfill_missing_scores() == 1

    headline_only.refresh_from_db()
    assert (headline_only.sentiment_label, headline_only.sentiment_model) == ("positive", "vader")
    assert count_missing_scores() == 0


def test_an_event_with_nothing_to_read_gets_no_label_and_leaves_the_sweep(serving):
    blank_headline = EventFactory(type="rating", text="", value=5,
                                  properties={"review_title": None})
    blank_text = EventFactory(type="review", text="   ", value=1)

    assert backfill_missing_scores() == 2

    for event in (blank_headline, blank_text):
        event.refresh_from_db()
        assert (event.sentiment_label, event.sentiment_score, event.sentiment_model) == (
            "", None, "vader")
    assert count_missing_scores() == 0


@hypothesis.settings(max_examples=30, deadline=None,
                     suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
# (A NUL never reaches a stored event: ingestion refuses it, and PostgreSQL cannot hold it.)
@hypothesis.given(texts=st.lists(NASTY_TEXTS.filter(lambda text: text.strip()
                                                    and "\x00" not in text),
                                 min_size=1, max_size=5))
def test_background_scoring_stores_only_finite_scores(sentiment_serving, texts):
    events = [EventFactory(type="review", text=text[:5000]) for text in texts]
    assert score_events(event_pks=[e.pk for e in events]) == len(events)
    for score, model_name in Event.objects.filter(pk__in=[e.pk for e in events]).values_list(
            "sentiment_score", "sentiment_model"):
        assert 0.0 <= score <= 1.0 and model_name == "sentiment-planted"
