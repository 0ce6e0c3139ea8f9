import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from ingestion.models import EndUser, Event, Item

URL = "/api/v1/events"


def event(**overrides) -> dict:
    return {"event_id": str(uuid.uuid4()), "type": "view", "user_id": "u1", "item_id": "sku-1",
            "timestamp": "2026-01-31T12:00:00+00:00", **overrides}


def post(client, body, **extra):
    return client.post(URL, data=json.dumps(body), content_type="application/json", **extra)


@pytest.mark.django_db
class TestEventIngest:
    def test_single_event_is_stored_with_unknown_user_and_item_created(self, client_app):
        response = post(client_app, event(type="purchase", value=19.5,
                                          properties={"coupon": "X"}))
        assert response.status_code == 200
        assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": 0, "errors": []}
        stored = Event.objects.get()
        assert (stored.type, stored.value, stored.properties) == ("purchase", 19.5,
                                                                  {"coupon": "X"})
        assert stored.user.user_id == "u1" and stored.item.item_id == "sku-1"

    def test_batch_stores_valid_events_and_reports_each_invalid_one(self, client_app):
        batch = [event(), event(type="rating", value=7), event(user_id=None),
                 event(type="signup", item_id=None), event(type="click", item_id="")]
        body = post(client_app, {"batch": batch}).json()
        assert (body["accepted"], body["rejected"]) == (2, 3)
        assert [(e["index"], e["field"]) for e in body["errors"]] == [
            (1, "value"), (2, "user_id"), (4, "item_id")]
        assert set(Event.objects.values_list("type", flat=True)) == {"view", "signup"}

    def test_custom_event_names_as_people_write_them_and_what_a_dashboard_cannot_ask_for(
            self, client_app):
        names = ["Signed Up (Google)", "Viewed /pricing", "User's Cart Updated",
                 "Newsletter Signup!", "Добавлено в корзину", " padded "]
        refused = ["a,b", "x" * 65, "tab\there", "  "]
        batch = [event(type=name, item_id=None) for name in names + refused]

        body = post(client_app, {"batch": batch}).json()

        assert sorted(Event.objects.values_list("type", flat=True)) == sorted(
            name.strip() for name in names)
        assert [(e["index"], e["field"]) for e in body["errors"]] == [
            (index, "type") for index in range(len(names), len(batch))]

    def test_event_properties_up_to_segments_message_size_are_kept(self, client_app):
        kept = event(properties={"$elements_chain": "div.flex.items-center;" * 900})  # 20 KB
        too_large = event(properties={"blob": "x" * 33 * 1024})

        body = post(client_app, {"batch": [kept, too_large]}).json()

        assert body["accepted"] == 1
        assert body["errors"][0]["field"] == "properties"
        assert "32 KB" in body["errors"][0]["message"]

    def test_retry_with_same_event_id_stores_nothing_new(self, client_app):
        batch = [event(), event()]
        post(client_app, {"batch": batch})
        again = post(client_app, {"batch": batch + [event()]}).json()
        assert (again["accepted"], again["duplicates"]) == (1, 2)
        assert Event.objects.count() == 3

    def test_same_event_twice_in_one_batch_counts_once(self, client_app):
        same = event()
        body = post(client_app, {"batch": [same, same]}).json()
        assert (body["accepted"], body["duplicates"]) == (1, 1)

    def test_missing_event_id_gets_one_generated(self, client_app):
        payload = event()
        del payload["event_id"]
        post(client_app, {"batch": [payload, payload]})
        assert Event.objects.count() == 2

    def test_timestamps_keep_their_instant_across_time_zones(self, client_app):
        post(client_app, {"batch": [event(timestamp="2026-03-01T09:30:00+05:30"),
                                    event(timestamp="2026-03-01T04:00:00Z")]})
        stamps = sorted(Event.objects.values_list("timestamp", flat=True))
        assert stamps == [datetime(2026, 3, 1, 4, 0, tzinfo=UTC)] * 2

    def test_naive_and_far_future_timestamps_are_rejected(self, client_app):
        future = (datetime.now(UTC) + timedelta(hours=25)).isoformat()
        soon = (datetime.now(UTC) + timedelta(hours=23)).isoformat()
        body = post(client_app, {"batch": [event(timestamp="2026-03-01T09:30:00"),
                                           event(timestamp=future), event(timestamp=soon)]}).json()
        assert body["accepted"] == 1
        assert [e["field"] for e in body["errors"]] == ["timestamp", "timestamp"]
        assert "offset" in body["errors"][0]["message"]

    def test_limits_on_text_properties_and_unknown_fields(self, client_app):
        body = post(client_app, {"batch": [
            event(type="review", text="x" * 5001),
            event(properties={"blob": "y" * 33000}),
            event(colour="red"),
            event(event_id="not-a-uuid"),
        ]}).json()
        assert body["rejected"] == 4
        assert [e["field"] for e in body["errors"]] == ["text", "properties", "colour",
                                                         "event_id"]

    def test_properties_the_database_cannot_store_are_that_events_reject(self, client_app):
        # 1e999 is valid JSON that Python reads as infinity; PostgreSQL refuses infinity in
        # json and a NUL in jsonb or text.
        body = json.dumps({"batch": [event(), event(properties={"depth": "INFINITE"}),
                                     event(properties={"k": "a\u0000"}),
                                     event(user_id="u\u0000"),
                                     event(type="review", value=4, text="great \ud83d"),
                                     event(properties={"k": "\udc00"})]})
        response = client_app.post(URL, data=body.replace('"INFINITE"', "1e999"),
                                   content_type="application/json")
        assert response.status_code == 200, response.content
        assert (response.json()["accepted"], response.json()["rejected"]) == (1, 5)
        assert [e["field"] for e in response.json()["errors"]] == [
            "properties", "properties", "user_id", "text", "properties"]
        assert Event.objects.count() == 1

    def test_values_python_reads_but_cannot_hold_are_that_events_reject(self, client_app):
        # A year-1 time ahead of UTC is before year 1 in UTC (PostgreSQL stores it, and it
        # could not be read back); 400 digits overflow a float; NUL 400 levels deep.
        nested = "INNER"
        for _ in range(400):
            nested = {"k": nested}
        body = json.dumps({"batch": [
            event(), event(timestamp="0001-01-01T00:00:00+05:00"),
            event(timestamp="1969-12-31T23:59:59Z"),
            event(type="purchase", value=12345), event(properties=nested),
            event(timestamp="9999-12-31T23:00:00-05:00")]})
        body = body.replace('"INNER"', '"a\\u0000"').replace("12345", "9" * 400)
        response = client_app.post(URL, data=body, content_type="application/json")

        assert response.status_code == 200, response.content
        errors = response.json()["errors"]
        assert [(e["index"], e["field"]) for e in errors] == [
            (1, "timestamp"), (2, "timestamp"), (3, "value"), (4, "properties"),
            (5, "timestamp")]
        assert "future" in errors[-1]["message"] and "1970" in errors[0]["message"]
        assert Event.objects.count() == 1

    def test_a_value_too_large_to_sum_is_that_events_reject(self, client_app, pm_client):
        now = timezone.now().isoformat()
        body = {"batch": [event(type="purchase", value=1e308, timestamp=now),
                          event(type="purchase", value=1e308, timestamp=now),
                          event(type="signup", value=-1e300, timestamp=now),
                          event(type="purchase", value=1e15, timestamp=now)]}
        response = client_app.post(URL, body, format="json")

        assert response.status_code == 200, response.content
        assert [(e["index"], e["field"]) for e in response.json()["errors"]] == [
            (0, "value"), (1, "value"), (2, "value")]
        overview = pm_client.get("/api/v1/analytics/overview")
        assert overview.status_code == 200 and overview.json()["revenue"] == 1e15

    def test_a_row_breaking_the_schemas_types_refuses_the_whole_batch(self, client_app):
        response = post(client_app, {"batch": [event(), event(properties=["not", "an", "object"]),
                                               event(value="seven")]})
        assert response.status_code == 400
        assert {e["attr"] for e in response.json()["errors"]} == {"batch.1.properties",
                                                                   "batch.2.value"}
        assert Event.objects.count() == 0

    def test_review_text_is_stored(self, client_app):
        post(client_app, event(type="review", value=2, text="Fell apart after a week"))
        assert Event.objects.get().text == "Fell apart after a week"

    def test_user_first_and_last_seen_follow_event_times(self, client_app):
        post(client_app, {"batch": [event(timestamp="2026-01-02T00:00:00Z"),
                                    event(timestamp="2026-01-05T00:00:00Z")]})
        post(client_app, event(timestamp="2026-01-01T00:00:00Z"))
        user = EndUser.objects.get(user_id="u1")
        assert user.first_seen == datetime(2026, 1, 1, tzinfo=UTC)
        assert user.last_seen == datetime(2026, 1, 5, tzinfo=UTC)


@pytest.mark.django_db
class TestEventIngestRequestErrors:
    def test_malformed_json_is_400_in_the_error_shape_and_stores_nothing(self, client_app):
        response = client_app.post(URL, data='{"batch": [', content_type="application/json")
        assert response.status_code == 400
        body = response.json()
        assert body["type"] == "client_error" and body["code"] == "parse_error"
        assert "Malformed JSON" in body["detail"]
        assert Event.objects.count() == 0

    @pytest.mark.parametrize("body", [[1, 2], "text", {"batch": {"a": 1}}, {"batch": []}])
    def test_body_of_the_wrong_shape_is_400(self, client_app, body):
        response = post(client_app, body)
        assert response.status_code == 400
        assert response.json()["type"] == "validation_error"

    def test_more_than_1000_events_is_400(self, client_app):
        response = post(client_app, {"batch": [event() for _ in range(1001)]})
        assert response.status_code == 400
        assert "1000" in response.json()["detail"]
        assert Event.objects.count() == 0

    def test_body_over_5_mb_is_413_with_a_clear_message(self, client_app):
        big = [event(text="z" * 5000, type="review", properties={"note": "p" * 1500})
               for _ in range(1000)]
        response = post(client_app, {"batch": big})
        assert response.status_code == 413
        assert "5 MB" in response.json()["detail"]
        assert Event.objects.count() == 0

    def test_no_key_is_401(self, anonymous):
        response = post(anonymous, event())
        assert response.status_code == 401
        assert response.json()["code"] == "not_authenticated"
        assert response["WWW-Authenticate"] == "Api-Key"

    def test_wrong_key_is_401(self, anonymous, api_key):
        response = post(anonymous, event(), HTTP_AUTHORIZATION=f"Api-Key {api_key[:-2]}xx")
        assert response.status_code == 401
        assert response.json()["code"] == "authentication_failed"
        assert Event.objects.count() == 0

    def test_logged_in_dashboard_user_cannot_ingest(self, pm_client):
        assert post(pm_client, event()).status_code == 403


@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_batch_store_each_event_once(api_key):
    from rest_framework.test import APIClient

    batch = [event(user_id=f"u{n}", item_id=f"i{n % 7}") for n in range(200)]
    results: list[dict] = []
    errors: list[BaseException] = []

    def send():
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
        try:
            results.append(post(client, {"batch": batch}).json())
        except BaseException as error:  # surfaced below; a thread can't fail the test itself
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sum(r["accepted"] for r in results) == 200
    assert sum(r["duplicates"] for r in results) == 600
    assert Event.objects.count() == 200
    assert Item.objects.count() == 7


@pytest.mark.django_db
class TestCatalogUpserts:
    def test_items_are_created_then_updated_keeping_unsent_fields(self, client_app):
        client_app.post("/api/v1/items", {"items": [
            {"item_id": "a", "title": "Lamp", "category": "home", "tags": ["light"]},
            {"item_id": "b", "title": "Mug"},
            {"title": "no id"},
        ]}, format="json")
        body = client_app.post("/api/v1/items", {"items": [
            {"item_id": "a", "is_active": False}]}, format="json").json()
        assert body == {"accepted": 1, "rejected": 0, "errors": []}
        lamp = Item.objects.get(item_id="a")
        assert (lamp.title, lamp.category, lamp.tags, lamp.is_active) == (
            "Lamp", "home", ["light"], False)
        assert Item.objects.count() == 2

    def test_nulls_the_schema_allows_are_accepted(self, client_app):
        client_app.post("/api/v1/items", {"items": [
            {"item_id": "a", "tags": ["light"], "is_active": False}]}, format="json")
        body = client_app.post("/api/v1/items", {"items": [
            {"item_id": "a", "title": None, "tags": None, "is_active": None},
            {"item_id": "b", "tags": None, "is_active": None}]}, format="json").json()

        assert body == {"accepted": 2, "rejected": 0, "errors": []}
        lamp, new = Item.objects.get(item_id="a"), Item.objects.get(item_id="b")
        assert (lamp.tags, lamp.is_active) == ([], False)
        assert (new.tags, new.is_active) == ([], True)

    def test_item_row_errors_name_the_row_and_field(self, client_app):
        body = client_app.post("/api/v1/items", {"items": [
            {"item_id": "a", "title": "t" * 501}, {"item_id": "b", "colour": "red"},
            {"item_id": "c"}]}, format="json").json()
        assert (body["accepted"], body["errors"]) == (1, [
            {"index": 0, "field": "title", "message": "Must be a string of at most 500 "
                                                      "characters."},
            {"index": 1, "field": "colour", "message": "Unknown field."}])

    def test_item_text_the_database_cannot_store_is_that_rows_reject(self, client_app):
        # json.dumps escapes the lone surrogates, as a JavaScript client's JSON does.
        body = client_app.post("/api/v1/items", data=json.dumps({"items": [
            {"item_id": "a", "title": "Lamp"}, {"item_id": "b", "category": "half \ud83d"},
            {"item_id": "c", "tags": ["ok", "bad \udc00"]}]}),
            content_type="application/json").json()
        assert (body["accepted"], [(e["index"], e["field"]) for e in body["errors"]]) == (
            1, [(1, "category"), (2, "tags")])
        assert list(Item.objects.values_list("item_id", flat=True)) == ["a"]

    def test_item_rows_breaking_the_schemas_types_are_a_400(self, client_app):
        response = client_app.post("/api/v1/items", {"items": [
            {"item_id": "a", "tags": "not-a-list"}, {"item_id": "b", "is_active": "yes"}]},
            format="json")
        assert response.status_code == 400
        assert {e["attr"] for e in response.json()["errors"]} == {"items.0.tags",
                                                                   "items.1.is_active"}
        assert Item.objects.count() == 0

    def test_user_traits_are_merged(self, client_app):
        client_app.post("/api/v1/users", {"users": [{"user_id": "u", "traits": {"plan": "free",
                                                                                 "country": "DE"}}]},
                        format="json")
        client_app.post("/api/v1/users", {"users": [{"user_id": "u", "traits": {"plan": "pro"}}]},
                        format="json")
        assert EndUser.objects.get(user_id="u").traits == {"plan": "pro", "country": "DE"}

    def test_user_row_errors_name_the_row_and_field_and_good_rows_are_kept(self, client_app):
        body = client_app.post("/api/v1/users", {"users": [
            {"user_id": "ok", "traits": {"plan": "pro"}}, {"traits": {"plan": "free"}},
            {"user_id": "big-traits", "traits": {"blob": "x" * 9000}}]}, format="json").json()

        assert (body["accepted"], body["rejected"]) == (1, 2)
        assert [(error["index"], error["field"]) for error in body["errors"]] == [
            (1, "user_id"), (2, "traits")]
        assert list(EndUser.objects.values_list("user_id", flat=True)) == ["ok"]
        refused = client_app.post("/api/v1/users", {"users": [
            {"user_id": "bad-traits", "traits": ["not", "a", "map"]}]}, format="json")
        assert (refused.status_code, refused.json()["attr"]) == (400, "users.0.traits")

    def test_traits_merged_past_the_limit_are_refused_and_an_sdk_can_still_set_them(
            self, client_app, api_key):
        half = {"user_id": "u", "traits": {"a": "x" * 5000}}
        other_half = {"user_id": "u", "traits": {"b": "y" * 5000}}
        client_app.post("/api/v1/users", {"users": [half]}, format="json")

        body = client_app.post("/api/v1/users", {"users": [other_half]}, format="json").json()

        assert (body["accepted"], body["rejected"]) == (0, 1)
        assert set(EndUser.objects.get(user_id="u").traits) == {"a"}
        # An admin edited another user's traits into a list: an SDK's $set still lands.
        EndUser.objects.create(user_id="edited", traits=["not", "an", "object"])
        posthog = client_app.post("/batch/", {"api_key": api_key, "batch": [
            {"event": "signup", "distinct_id": "edited", "properties": {"$set": {"plan": "pro"}}}]},
            format="json")
        assert posthog.status_code == 200
        assert EndUser.objects.get(user_id="edited").traits == {"plan": "pro"}

    @pytest.mark.parametrize("path, key", [("/api/v1/items", "items"),
                                           ("/api/v1/users", "users")])
    def test_more_than_1000_catalog_rows_is_400(self, client_app, path, key):
        rows = [{"item_id" if key == "items" else "user_id": f"row-{n}"} for n in range(1001)]

        response = client_app.post(path, {key: rows}, format="json")

        assert response.status_code == 400
        assert "1000" in response.json()["detail"]
        assert not Item.objects.exists() and not EndUser.objects.exists()

    def test_items_body_must_be_a_batch(self, client_app):
        response = client_app.post("/api/v1/items", {"item_id": "a"}, format="json")
        assert response.status_code == 400
