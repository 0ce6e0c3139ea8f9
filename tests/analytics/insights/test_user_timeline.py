"""A user's timeline: the person across ids, in time order, with what they would see."""

import pytest

from analytics.insights import user_timeline
from recommender.models import Impression
from tests.analytics.insights.builders import at, event, item, user


pytestmark = pytest.mark.django_db


@pytest.fixture
def shopper():
    from ingestion.services import link_identities
    from recommender.recommendations import reset_caches

    reset_caches()  # popular items are cached per process
    dress, boots, scarf = item("dress", "clothes"), item("boots", "shoes"), item("scarf", "clothes")
    event(user("someone-else"), "view", at(2), scarf)
    anonymous = user("anon-7", first_seen=at(3))
    known = user("u7", first_seen=at(4))
    known.traits = {"plan": "pro", "items": "a trait named like a dict method"}
    known.save()
    event(anonymous, "view", at(3), dress)
    event(known, "purchase", at(4), dress, value=40.0)
    event(known, "review", at(5), dress, text="Lovely fit", sentiment_label="positive",
          sentiment_score=0.9)
    event(known, "view", at(6), boots)
    link_identities(links=[("anon-7", "u7")], linked_at=at(4))


def test_the_person_across_ids_newest_first_with_traits_and_sentiment(shopper):
    timeline = user_timeline.user_timeline(user_id="anon-7")

    assert timeline["user_id"] == "u7" and timeline["looked_up"] == "anon-7"
    assert [(row["type"], row["user_id"], row["item_id"]) for row in timeline["events"]] == [
        ("view", "u7", "boots"), ("review", "u7", "dress"), ("purchase", "u7", "dress"),
        ("view", "anon-7", "dress")]
    assert timeline["event_count"] == 4
    assert {row["user_id"]: row["traits"] for row in timeline["ids"]} == {
        "anon-7": [], "u7": [("items", "a trait named like a dict method"), ("plan", "pro")]}
    assert timeline["sentiment"] == {"negative": 0, "neutral": 0, "positive": 1}
    assert timeline["recent_items"][0] == "boots"


def test_recommendations_are_shown_without_being_logged(shopper):
    timeline = user_timeline.user_timeline(user_id="u7", limit=2)

    assert len(timeline["events"]) == 2
    recommendations = timeline["recommendations"]
    # No model trained here: popular items the shopper has not interacted with yet
    # (dress and boots are popular too, but theirs already).
    assert recommendations["strategy"] == "popular"
    assert [row["item_id"] for row in recommendations["items"]] == ["scarf"]
    assert not Impression.objects.exists()


def test_an_unknown_user_has_no_timeline():
    assert user_timeline.user_timeline(user_id="nobody") is None
