"""The real PostHog and Segment Python libraries, pointed at a live Lodestar, send events
that arrive exactly as stored events, items, values and one merged identity."""

import uuid

import posthog
import pytest
import segment.analytics as segment_analytics

from ingestion.models import EndUser, Event, IdentityLink, Item

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def posthog_client(live_server, api_key):
    client = posthog.Posthog(api_key, host=live_server.url, gzip=True, max_retries=0,
                             flush_at=500, disable_geoip=True, enable_exception_autocapture=False)
    yield client
    client.shutdown()


@pytest.fixture
def segment_client(live_server, api_key):
    errors = []
    client = segment_analytics.Client(write_key=api_key, host=live_server.url, gzip=True,
                                      max_retries=0, upload_size=500,
                                      on_error=lambda error, batch: errors.append(error))
    client.errors = errors
    yield client
    client.shutdown()


def stored(**filters) -> list[tuple]:
    return sorted(Event.objects.filter(**filters).values_list(
        "type", "user__user_id", "item__item_id", "value"), key=repr)


class TestPostHogPython:
    def test_capture_commerce_and_custom_events_arrive_mapped(self, posthog_client):
        posthog_client.capture("Product Viewed", distinct_id="anon-7",
                               properties={"product_id": "sku-1", "name": "Linen shirt",
                                           "category": "shirts", "price": 40})
        posthog_client.capture("Product Added", distinct_id="anon-7",
                               properties={"product_id": "sku-1"})
        posthog_client.capture("Order Completed", distinct_id="anon-7", properties={
            "order_id": "o-9", "products": [
                {"product_id": "sku-1", "price": 40, "quantity": 2},
                {"sku": "sku-2", "price": 5.5}]})
        posthog_client.capture("search", distinct_id="anon-7", properties={"query": "linen"})
        posthog_client.flush()

        assert stored() == sorted([
            ("view", "anon-7", "sku-1", None), ("add_to_cart", "anon-7", "sku-1", None),
            ("purchase", "anon-7", "sku-1", 80.0), ("purchase", "anon-7", "sku-2", 5.5),
            ("search", "anon-7", None, None)], key=repr)
        shirt = Item.objects.get(item_id="sku-1")
        assert (shirt.title, shirt.category, shirt.attributes["price"]) == (
            "Linen shirt", "shirts", 40)
        orders = set(Event.objects.filter(type="purchase")
                     .values_list("properties__order_id", flat=True))
        assert orders == {"o-9"}
        search = Event.objects.get(type="search")
        assert search.properties["query"] == "linen"
        assert "token" not in search.properties and "api_key" not in search.properties

    def test_alias_merges_the_anonymous_history_into_the_user(self, posthog_client):
        posthog_client.capture("Product Viewed", distinct_id="anon-1",
                               properties={"product_id": "sku-1"})
        posthog_client.alias(previous_id="anon-1", distinct_id="user-1")
        posthog_client.set(distinct_id="user-1", properties={"plan": "pro"})
        posthog_client.flush()

        link = IdentityLink.objects.get()
        assert (link.alias.user_id, link.person.user_id) == ("anon-1", "user-1")
        assert EndUser.objects.get(user_id="user-1").traits == {"plan": "pro"}
        assert stored(type="view") == [("view", "anon-1", "sku-1", None)]

    def test_a_retried_batch_stores_nothing_twice(self, posthog_client):
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for attempt in range(2):
            for n, event_uuid in enumerate(ids):
                posthog_client.capture("Product Viewed", distinct_id="u1", uuid=event_uuid,
                                       properties={"product_id": f"sku-{n}"})
            posthog_client.flush()
        assert Event.objects.count() == 3
        assert {str(e) for e in Event.objects.values_list("event_id", flat=True)} == set(ids)


class TestSegmentPython:
    def test_track_identify_page_and_group_arrive_mapped(self, segment_client):
        segment_client.page(anonymous_id="anon-2", name="Product",
                            properties={"product_id": "sku-3"})
        segment_client.track(anonymous_id="anon-2", event="Product Clicked",
                             properties={"product_id": "sku-3"})
        segment_client.track(user_id="u2", anonymous_id="anon-2", event="Product Reviewed",
                             properties={"product_id": "sku-3", "rating": 2,
                                         "review_title": "Flimsy",
                                         "review_body": "Tore after a week"})
        segment_client.track(user_id="u2", event="signup",
                             properties={"plan": "team", "utm_source": "ads"})
        segment_client.identify(user_id="u2", traits={"email_domain": "example.com"})
        segment_client.group(user_id="u2", group_id="acme", traits={"seats": 12})
        segment_client.flush()

        assert segment_client.errors == []
        assert stored() == sorted([
            ("view", "anon-2", "sku-3", None), ("click", "anon-2", "sku-3", None),
            ("review", "u2", "sku-3", 2.0), ("signup", "u2", None, None)], key=repr)
        review = Event.objects.get(type="review")
        assert review.text == "Tore after a week"
        # The headline sentiment reads first (recommender.selectors.scored_text).
        assert review.properties["review_title"] == "Flimsy"
        assert Event.objects.get(type="signup").properties == {"plan": "team",
                                                                "utm_source": "ads"}
        assert EndUser.objects.get(user_id="u2").traits == {
            "email_domain": "example.com", "group_id": "acme", "group_traits": {"seats": 12}}
        link = IdentityLink.objects.get()
        assert (link.alias.user_id, link.person.user_id) == ("anon-2", "u2")

    def test_alias_links_previous_id_to_user(self, segment_client):
        segment_client.alias(previous_id="anon-3", user_id="u3")
        segment_client.flush()
        assert IdentityLink.objects.filter(alias__user_id="anon-3",
                                           person__user_id="u3").exists()

    def test_order_completed_becomes_one_purchase_per_product(self, segment_client):
        segment_client.track(user_id="u4", event="Order Completed", properties={
            "order_id": "50314b8e", "currency": "EUR", "products": [
                {"product_id": "sku-5", "name": "Mug", "price": 12, "quantity": 3},
                {"product_id": "sku-6", "price": 3}]})
        segment_client.flush()
        assert stored() == [("purchase", "u4", "sku-5", 36.0), ("purchase", "u4", "sku-6", 3.0)]
        assert Item.objects.get(item_id="sku-5").title == "Mug"

    def test_a_retried_batch_stores_nothing_twice(self, segment_client):
        ids = [str(uuid.uuid4()) for _ in range(3)]
        for _ in range(2):
            for n, message_id in enumerate(ids):
                segment_client.track(user_id="u5", event="Product Viewed", message_id=message_id,
                                     properties={"product_id": f"sku-{n}"})
            segment_client.flush()
        assert Event.objects.count() == 3

    def test_a_wrong_write_key_is_refused_and_nothing_stored(self, live_server, api_key):
        errors = []
        client = segment_analytics.Client(write_key="not-a-key", host=live_server.url,
                                          max_retries=0,
                                          on_error=lambda error, batch: errors.append(error))
        client.track(user_id="u6", event="signup")
        client.flush()
        client.shutdown()
        assert [error.status for error in errors] == [401]
        assert Event.objects.count() == 0
