"""What the capture endpoints answer to bodies no SDK should send, and the encodings and
calls the SDKs do send that the Python libraries do not exercise."""

import base64
import gzip
import io
import json
import uuid
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import quote

import pytest
from django.db import OperationalError
from rest_framework.test import APIClient

from ingestion.models import CaptureReject, EndUser, Event, Item

pytestmark = pytest.mark.django_db


def view(**overrides) -> dict:
    return {"event": "Product Viewed", "distinct_id": "u1", "uuid": str(uuid.uuid4()),
            "properties": {"product_id": "sku-1"}, **overrides}


def posthog_post(body: bytes, *, path="/batch/", **headers):
    return APIClient().post(path, data=body, content_type=headers.pop("content_type",
                                                                      "application/json"),
                            **headers)


def batch_body(api_key: str, events: list) -> bytes:
    return json.dumps({"api_key": api_key, "batch": events}).encode()


class TestPostHogBodies:
    def test_gzip_js_and_base64_form_bodies_are_read(self, api_key):
        events = [{**view(), "properties": {"product_id": "sku-1", "token": api_key}}]
        gzipped = posthog_post(gzip.compress(json.dumps(events).encode()),
                               path="/e/?compression=gzip-js", content_type="text/plain")
        as_form = posthog_post(
            b"data=" + quote(base64.b64encode(json.dumps(
                [{**view(), "properties": {"token": api_key}}]).encode())).encode(),
            path="/i/v0/e/", content_type="application/x-www-form-urlencoded")
        assert (gzipped.status_code, as_form.status_code) == (200, 200)
        assert Event.objects.count() == 2

    def test_truncated_gzip_is_a_400_and_stores_nothing(self, api_key):
        whole = gzip.compress(batch_body(api_key, [view(), view()]))
        response = posthog_post(whole[:-12], HTTP_CONTENT_ENCODING="gzip")
        assert response.status_code == 400
        assert response.json()["code"] == "unreadable_body"
        assert Event.objects.count() == 0

    def test_wrong_base64_is_a_400(self, api_key):
        response = posthog_post(b"data=%%%not-base64!!", path="/e/",
                                content_type="application/x-www-form-urlencoded")
        assert response.status_code == 400

    def test_a_body_over_the_size_cap_is_a_413(self, api_key):
        padding = "x" * (6 * 1024 * 1024)
        response = posthog_post(batch_body(api_key, [view(properties={"pad": padding})]))
        assert response.status_code == 413
        assert Event.objects.count() == 0

    def test_a_gzip_bomb_is_a_413(self, api_key):
        bomb = gzip.compress(batch_body(api_key, [view(properties={"pad": " " * 60_000_000})]))
        assert len(bomb) < 1024 * 1024
        response = posthog_post(bomb, HTTP_CONTENT_ENCODING="gzip")
        assert response.status_code == 413

    def test_a_wrong_or_missing_key_is_a_401(self, api_key):
        wrong = posthog_post(batch_body("phc_not_a_key", [view()]))
        missing = posthog_post(json.dumps({"batch": [view()]}).encode())
        assert (wrong.status_code, missing.status_code) == (401, 401)
        assert Event.objects.count() == 0

    def test_the_key_may_come_as_a_bearer_token(self, api_key):
        response = posthog_post(json.dumps({"batch": [view()]}).encode(),
                                HTTP_AUTHORIZATION=f"Bearer {api_key}")
        assert response.status_code == 200

    def test_bad_events_are_counted_and_kept_as_the_keys_rejects_the_rest_stored(self, api_key):
        events = [view(), "not an object", view(distinct_id=None), view(event="bad,name"),
                  view(event="rating", properties={"product_id": "sku-1", "rating": 9})]
        response = posthog_post(batch_body(api_key, events))
        assert response.status_code == 200
        assert response.json()["accepted"] == 1 and response.json()["rejected"] == 4
        assert Event.objects.count() == 1
        rejects = CaptureReject.objects.order_by("field")
        assert [r.field for r in rejects] == ["distinct_id", "event", "type", "value"]
        assert {r.api_key.name for r in rejects} == {"test client"}

    def test_a_purchase_refused_for_its_price_leaves_the_price_out_of_the_catalog(self,
                                                                                 api_key):
        response = posthog_post(batch_body(api_key, [view(
            event="Order Completed", properties={"order_id": "o1", "products": [
                {"product_id": "p1", "name": "Scarf", "price": -5}]})]))

        assert (response.json()["accepted"], response.json()["rejected"]) == (0, 1)
        # What it could store, as for any refused event: the name, not the price.
        scarf = Item.objects.get(item_id="p1")
        assert scarf.title == "Scarf" and "price" not in scarf.attributes

    def test_a_review_rated_off_the_scale_keeps_its_text_without_the_rating(self, api_key):
        response = posthog_post(batch_body(api_key, [view(
            event="Product Reviewed",
            properties={"product_id": "sku-1", "rating": 9, "review_body": "Runs small"})]))

        assert response.json()["accepted"] == 1
        review = Event.objects.get()
        assert (review.type, review.text, review.value) == ("review", "Runs small", None)
        assert review.properties["rating"] == 9

    def test_values_the_database_cannot_store_are_rejects_not_a_failed_batch(self, api_key):
        long_id = "x" * 256
        # As Python's json reads them: NaN, 1e999 (infinity), a NUL in a string.
        body = batch_body(api_key, [
            view(),
            view(properties={"product_id": "sku-2", "score": float("nan")}),
            view(event="Scrolled", properties={"depth": 1e999}),
            view(event="Product Reviewed", properties={"product_id": "sku-3", "rating": 4,
                                                       "review_body": "ok\u0000"}),
            view(properties={"product_id": long_id, "name": "Shirt"}),
            view(distinct_id="y" * 256, properties={"product_id": "sku-4",
                                                    "$set": {"plan": "pro"}}),
            view(properties={"product_id": "sku-5", "name": "Nul\u0000", "category": "hats"}),
            {"event": "$identify", "distinct_id": "z" * 256, "uuid": str(uuid.uuid4()),
             "properties": {"$anon_distinct_id": "anon-1", "$set": {"plan": "pro"}}},
            {"event": "x", "distinct_id": "u2", "uuid": str(uuid.uuid4()), "offset": 1e15},
            # Halves of UTF-16 surrogate pairs, as JavaScript's string slicing leaves them.
            view(properties={"product_id": "sku-6", "name": "half \ud83d", "category": "bags"}),
            {"event": "Signed \udc00up", "distinct_id": "u3", "uuid": str(uuid.uuid4())},
        ])
        response = posthog_post(body)

        assert response.status_code == 200, response.content
        assert (response.json()["accepted"], response.json()["rejected"]) == (2, 9)
        assert set(Event.objects.values_list("type", "item__item_id")) == {("view", "sku-1"),
                                                                          ("x", None)}
        # The catalog keeps what it can store: a category, not a name with a NUL.
        assert Item.objects.values_list("title", "category").get(item_id="sku-5") == ("", "hats")
        assert Item.objects.values_list("title", "category").get(item_id="sku-6") == ("", "bags")
        assert not Item.objects.filter(item_id=long_id).exists()
        assert not EndUser.objects.filter(user_id__in=["y" * 256, "z" * 256]).exists()
        assert sorted((r.event_name, r.field) for r in CaptureReject.objects.all()) == [
            ("$identify", "user_id"), ("Scrolled", "properties"),
            ("Signed \\udc00up", "type"), ("review", "text"), ("view", "item_id"),
            ("view", "properties"), ("view", "properties"), ("view", "properties"),
            ("view", "user_id")]
        # What made them rejects is kept, escaped where no column could hold it.
        assert '"name": "half \\ud83d"' in CaptureReject.objects.get(
            payload__contains="sku-6").payload

    def test_posthog_js_time_of_sending_in_the_query_corrects_a_fast_clock(self, api_key):
        # A device clock two days fast: posthog-js stamps the event and sends `_` from it.
        device_now = datetime.now(UTC) + timedelta(days=2)
        event = {**view(), "timestamp": (device_now - timedelta(seconds=5)).isoformat(),
                 "properties": {"product_id": "sku-1", "token": api_key}}
        before = datetime.now(UTC)
        response = posthog_post(json.dumps([event]).encode(),
                                path=f"/e/?_={int(device_now.timestamp() * 1000)}")
        assert response.status_code == 200 and response.json()["accepted"] == 1
        stored = Event.objects.get().timestamp
        assert before - timedelta(seconds=6) <= stored <= datetime.now(UTC)

    def test_a_message_without_uuid_or_time_sent_twice_is_two_events(self, api_key):
        # PostHog's curl example: no uuid, no timestamp; sent again the next day.
        body = json.dumps({"api_key": api_key, "event": "logged_in",
                           "distinct_id": "u1"}).encode()
        assert posthog_post(body, path="/capture/").status_code == 200
        assert posthog_post(body, path="/capture/").status_code == 200

        assert Event.objects.filter(type="logged_in").count() == 2

    def test_a_body_python_cannot_read_as_json_is_a_400(self, api_key):
        digits = b"1" * 5000  # over Python's 4,300-digit limit for integers
        response = posthog_post(b'{"api_key": "' + api_key.encode() + b'", "batch": [' + digits
                                + b"]}")
        assert response.status_code == 400
        assert response.json()["code"] == "unreadable_body"

    def test_database_unavailable_is_a_503_with_retry_after(self, api_key):
        with mock.patch("ingestion.services.store_events",
                        side_effect=OperationalError("terminating connection")):
            response = posthog_post(batch_body(api_key, [view()]))
        assert response.status_code == 503
        assert response["Retry-After"] == "5"
        assert response.json()["code"] == "database_unavailable"


class TestBrowserSdkSupport:
    def test_cors_preflight_and_reply_allow_the_shops_origin(self, api_key):
        client = APIClient()
        preflight = client.options("/e/", HTTP_ORIGIN="https://shop.example",
                                   HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
                                   HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type")
        assert preflight.status_code == 200
        assert preflight["Access-Control-Allow-Origin"] == "https://shop.example"
        assert "POST" in preflight["Access-Control-Allow-Methods"]
        reply = posthog_post(batch_body(api_key, [view()]), HTTP_ORIGIN="https://shop.example")
        assert reply["Access-Control-Allow-Origin"] == "https://shop.example"

    @pytest.mark.parametrize("path", ["/decide/?v=3", "/flags/?v=2&config=true"])
    def test_flag_calls_answer_no_flags(self, path):
        reply = APIClient().post(path, data="{}", content_type="application/json").json()
        assert reply["featureFlags"] == {} and reply["flags"] == {}
        assert reply["sessionRecording"] is False

    def test_remote_config_answers_none(self):
        reply = APIClient().get("/array/phc_abc/config").json()
        assert reply["token"] == "phc_abc" and reply["siteApps"] == []


class TestSegmentBodies:
    def test_single_call_paths_with_basic_auth(self, api_key):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Basic "
                           + base64.b64encode(f"{api_key}:".encode()).decode())
        track = client.post("/v1/track", data=json.dumps({
            "userId": "u1", "event": "Product Added", "messageId": "m-1",
            "properties": {"product_id": "sku-1"}}), content_type="application/json")
        page = client.post("/v1/p", data=json.dumps({
            "anonymousId": "a1", "name": "Home", "properties": {"path": "/"}}),
            content_type="application/json")
        assert (track.status_code, page.status_code) == (200, 200)
        assert sorted(Event.objects.values_list("type", flat=True)) == ["add_to_cart", "page"]

    def test_non_object_batch_messages_are_rejects(self, api_key):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Basic "
                           + base64.b64encode(f"{api_key}:".encode()).decode())
        response = client.post("/v1/batch", data=json.dumps({"batch": [
            42, {"type": "track", "userId": "u1", "event": "signup"}]}),
            content_type="application/json")
        assert response.json()["accepted"] == 1 and response.json()["rejected"] == 1

    def test_unreadable_and_unauthenticated_bodies(self, api_key):
        client = APIClient()
        assert client.post("/v1/batch", data="{}", content_type="application/json"
                           ).status_code == 401
        client.credentials(HTTP_AUTHORIZATION="Basic "
                           + base64.b64encode(f"{api_key}:".encode()).decode())
        truncated = gzip.compress(b'{"batch": []}')[:-4]
        assert client.post("/v1/batch", data=truncated, content_type="application/json",
                           HTTP_CONTENT_ENCODING="gzip").status_code == 400

    def test_a_chunked_gzip_batch_without_a_length_is_read_whole(self, api_key):
        # Segment's Kotlin library: gzip streamed in chunks to /v1/b, the key in the body.
        # Django reads a body without Content-Length as empty; gunicorn ends the raw input
        # where the chunks end (wsgi.input_terminated).
        body = gzip.compress(json.dumps({"writeKey": api_key, "batch": [
            {"type": "track", "userId": "u1", "event": "Product Added", "messageId": "k-1",
             "properties": {"product_id": "sku-1"}}]}).encode())
        response = APIClient().generic(
            "POST", "/v1/b", data=body, content_type="text/plain",
            CONTENT_LENGTH="", HTTP_TRANSFER_ENCODING="chunked",
            **{"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True})

        assert response.status_code == 200, response.content
        assert list(Event.objects.values_list("type", flat=True)) == ["add_to_cart"]

    @pytest.mark.parametrize("path", ["/v1/import", "/v1/import/", "/v1/batch/"])
    def test_the_batch_paths_of_the_ruby_java_and_android_libraries(self, api_key, path):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Basic "
                           + base64.b64encode(f"{api_key}:".encode()).decode())
        response = client.post(path, data=json.dumps({"batch": [
            {"type": "track", "userId": "u1", "event": "signup", "messageId": "r-1"}]}),
            content_type="application/json")
        assert response.status_code == 200, response.content
        assert Event.objects.filter(type="signup").count() == 1


def test_sdk_events_named_as_lodestars_own_types_are_those_types(api_key):
    response = posthog_post(batch_body(api_key, [
        view(event="purchase", properties={"product_id": "sku-9", "price": 12.5}),
        view(event="add_to_cart", properties={"product_id": "sku-9"}),
        view(event="rating", properties={"product_id": "sku-9", "rating": 4})]))

    assert response.json()["accepted"] == 3, response.content
    assert sorted(Event.objects.values_list("type", "item__item_id", "value")) == [
        ("add_to_cart", "sku-9", None), ("purchase", "sku-9", 12.5), ("rating", "sku-9", 4.0)]


def test_posthog_over_its_rate_is_told_to_retry_later_and_segment_refusals_carry_a_message(
        api_key, monkeypatch):
    from ingestion.capture.apis import PostHogCaptureApi

    (throttle,) = PostHogCaptureApi.throttle_classes
    monkeypatch.setattr(throttle, "THROTTLE_RATES", {"events": "1/minute"})
    first = posthog_post(batch_body(api_key, [view()]))
    over = posthog_post(batch_body(api_key, [view()]))
    assert first.status_code == 200
    # posthog-js drops a batch refused with 429 and retries one refused with 503.
    assert over.status_code == 503 and int(over["Retry-After"]) > 0
    assert over.json()["code"] == "throttled"

    refused = APIClient().post("/v1/batch", data="{}", content_type="application/json")
    assert refused.status_code == 401
    assert refused.json()["message"] == refused.json()["detail"]


def test_cookieless_visitors_are_users_of_their_own_and_signing_in_takes_only_ones_own(
        api_key):
    from ingestion.models import IdentityLink

    def cookieless(address, agent, **headers):
        return posthog_post(batch_body(api_key, [view(
            distinct_id="$posthog_cookieless",
            properties={"product_id": "sku-1", "$cookieless_mode": True})]),
            REMOTE_ADDR=address, HTTP_USER_AGENT=agent, **headers)

    cookieless("203.0.113.5", "Firefox")
    cookieless("203.0.113.5", "Firefox", HTTP_X_FORWARDED_FOR="198.51.100.7")  # ignored
    cookieless("198.51.100.7", "Safari")
    posthog_post(batch_body(api_key, [view(
        event="$identify", distinct_id="ann",
        properties={"$anon_distinct_id": "$posthog_cookieless"})]),
        REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="Safari")

    visitors = set(Event.objects.filter(type="view").values_list("user__user_id", flat=True))
    assert len(visitors) == 2 and "$posthog_cookieless" not in visitors
    assert all(visitor.startswith("cookieless-") for visitor in visitors)
    (link,) = IdentityLink.objects.all()
    assert link.person.user_id == "ann"
    assert Event.objects.filter(type="view", user=link.alias).count() == 1  # Safari's view


def test_analytics_js_loads_settings_that_send_its_events_here(api_key):
    response = APIClient().get(f"/v1/projects/{api_key}/settings",
                               HTTP_ORIGIN="https://shop.example")

    assert response.status_code == 200
    segment_io = response.json()["integrations"]["Segment.io"]
    assert segment_io == {"apiKey": api_key, "apiHost": "testserver/v1", "protocol": "http"}
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    assert APIClient().get("/v1/projects/not-a-key/settings").status_code == 404
