from datetime import UTC, datetime, timedelta

import pytest

from ingestion.models import Event, Item
from ingestion.selectors import person_of
from ingestion.services import link_identities
from recommender import selectors
from tests.factories import EndUserFactory, EventFactory, ItemFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_recent_interactions_are_oldest_to_newest_and_limited():
    user = EndUserFactory(user_id="u1")
    for n, item in enumerate(["a", "b", "c", "a"]):
        EventFactory(user=user, item=ItemFactory(item_id=item), type="click",
                     timestamp=T0 + timedelta(minutes=n))
    EventFactory(user=user, item=ItemFactory(item_id="searched"), type="search",
                 timestamp=T0 + timedelta(hours=1))
    EventFactory(item=ItemFactory(item_id="other-user"), timestamp=T0)

    assert history_of("u1", limit=10) == ["a", "b", "c", "a"]
    assert history_of("u1", limit=2) == ["c", "a"]
    assert history_of("nobody", limit=10) == []


def history_of(user_id: str, **kwargs) -> list[str]:
    return selectors.recent_interactions(person=person_of(user_id=user_id), **kwargs)


def test_a_linked_anonymous_history_is_the_persons_whichever_id_is_asked_for():
    anonymous, known = EndUserFactory(user_id="anon-1"), EndUserFactory(user_id="u1")
    EventFactory(user=anonymous, item=ItemFactory(item_id="before-login"), type="view",
                 timestamp=T0)
    EventFactory(user=known, item=ItemFactory(item_id="after-login"), type="view",
                 timestamp=T0 + timedelta(minutes=5))
    assert history_of("u1", limit=10) == ["after-login"]

    link_identities(links=[("anon-1", "u1")], linked_at=T0)

    assert history_of("u1", limit=10) == ["before-login", "after-login"]
    assert history_of("anon-1", limit=10) == ["before-login", "after-login"]
    assert person_of(user_id="anon-1").user_id == "u1"
    frame = selectors.interaction_frame()
    assert frame["user_id"].tolist() == ["u1", "u1"]


def test_recent_interactions_take_item_ids_from_the_given_catalog_and_the_rest_from_the_db():
    user = EndUserFactory(user_id="u1")
    cached, added_since = ItemFactory(item_id="cached"), ItemFactory(item_id="added-since")
    for n, item in enumerate([cached, added_since, cached]):
        EventFactory(user=user, item=item, type="view", timestamp=T0 + timedelta(minutes=n))
    # A catalog built before "added-since" existed (its id as the catalog spells it).
    catalog = {cached.pk: "cached-as-known"}

    assert history_of("u1", limit=10, item_ids_by_pk=catalog) == [
        "cached-as-known", "added-since", "cached-as-known"]


def test_popular_items_weigh_event_types_and_skip_inactive_items():
    now = datetime(2026, 2, 1, tzinfo=UTC)
    bought = ItemFactory(item_id="bought", category="x")
    viewed = ItemFactory(item_id="viewed", category="y")
    gone = ItemFactory(item_id="gone", is_active=False)
    EventFactory(item=bought, type="purchase", timestamp=now - timedelta(days=1))
    for _ in range(3):
        EventFactory(item=viewed, type="view", timestamp=now - timedelta(days=1))
    for _ in range(9):
        EventFactory(item=gone, type="purchase", timestamp=now - timedelta(days=1))

    ranked = selectors.popular_items(now=now)

    assert ranked == [("bought", "x", 4.0), ("viewed", "y", 3.0)]


def test_popular_items_fall_back_to_all_time_then_newest():
    now = datetime(2026, 6, 1, tzinfo=UTC)
    old = ItemFactory(item_id="old")
    EventFactory(item=old, type="view", timestamp=now - timedelta(days=90))

    assert [i for i, _, _ in selectors.popular_items(now=now)] == ["old"]
    Item.objects.all().delete()
    ItemFactory(item_id="fresh")
    assert selectors.popular_items(now=now) == [("fresh", "general", 0.0)]


def test_interaction_frame_is_in_time_order_with_weights():
    user = EndUserFactory(user_id="u1")
    EventFactory(user=user, item=ItemFactory(item_id="b"), type="purchase",
                 timestamp=T0 + timedelta(minutes=5))
    EventFactory(user=user, item=ItemFactory(item_id="a"), type="view", timestamp=T0)
    EventFactory(user=user, item=None, type="search", timestamp=T0)

    frame = selectors.interaction_frame()

    assert frame["item_id"].tolist() == ["a", "b"]
    assert frame["user_id"].tolist() == ["u1", "u1"]
    assert frame["weight"].tolist() == [1.0, 4.0]
    assert frame["timestamp"].tolist() == [T0.timestamp(), (T0 + timedelta(minutes=5)).timestamp()]
    assert frame["received_at"].tolist() == [
        event.received_at.timestamp()
        for event in Event.objects.filter(item__isnull=False).order_by("timestamp")]


def test_labelled_review_frame_uses_labels_then_ratings():
    EventFactory(type="review", text="explicit", value=5, properties={"label": "negative"})
    EventFactory(type="rating", text="rated", value=2)
    EventFactory(type="review", text="half star", value=3.5)
    EventFactory(type="review", text="", value=5)
    EventFactory(type="review", text="nearly perfect", value=4.5)
    EventFactory(type="review", text="nearly the worst", value=1.5)
    EventFactory(type="review", text="so-so", value=2.5)

    frame = selectors.labelled_review_frame()

    assert frame["text"].tolist() == ["explicit", "rated", "nearly perfect", "nearly the worst"]
    assert frame["label"].tolist() == ["negative", 2, "positive", "negative"]


def test_labelled_review_frame_reads_a_reviews_headline_first():
    EventFactory(type="review", text="Returned it.", value=1,
                 properties={"review_title": "Runs small"})
    EventFactory(type="review", text="Wearing it daily.", value=5, properties={"title": "Shirt"})
    EventFactory(type="review", text="Fits.", value=4, properties={"review_title": ["odd"]})

    frame = selectors.labelled_review_frame()

    assert frame["text"].tolist() == ["Runs small. Returned it.", "Wearing it daily.", "Fits."]


def test_labelled_review_frame_reads_a_headline_without_a_body():
    EventFactory(type="rating", text="", value=1, properties={"review_title": "Fell apart"})
    EventFactory(type="rating", text="", value=5, properties={"review_title": "   "})
    EventFactory(type="view", text="", properties={"review_title": "Lovely"})

    frame = selectors.labelled_review_frame()

    assert frame["text"].tolist() == ["Fell apart"]
    assert frame["label"].tolist() == [1]


def test_traits_are_read_as_text_and_traits_that_are_not_an_object_are_none():
    EndUserFactory(user_id="pro", traits={"plan": "pro", "seats": 3})
    EndUserFactory(user_id="edited", traits=["typed", "into", "the", "admin"])

    assert person_of(user_id="pro").traits == {"plan": "pro", "seats": "3"}
    assert person_of(user_id="edited").traits == {}
    assert selectors.user_trait_map() == {"pro": {"plan": "pro", "seats": "3"}}
