from datetime import UTC, date, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from analytics.insights import overview
from analytics.insights.common import EARLIEST_DAY, LATEST_DAY
from tests.database import busy_statement
from tests.factories import EndUserFactory, EventFactory, ItemFactory

pytestmark = pytest.mark.django_db

ENDPOINTS = ["overview", "trends", "funnel", "retention", "lifecycle", "stickiness", "paths",
             "items", "sentiment", "recommendations"]


def url(name: str) -> str:
    return f"/api/v1/analytics/{name}"


@pytest.mark.parametrize("name", ENDPOINTS)
class TestAccess:
    def test_anonymous_is_refused(self, anonymous, name):
        response = anonymous.get(url(name))
        assert response.status_code in (401, 403)
        assert response.json()["type"] == "client_error"

    def test_api_key_does_not_open_analytics(self, client_app, name):
        assert client_app.get(url(name)).status_code in (401, 403)

    def test_login_without_role_is_refused(self, name):
        from rest_framework.test import APIClient

        client = APIClient()
        client.force_login(get_user_model().objects.create_user(username="nobody"))
        assert client.get(url(name)).status_code == 403

    def test_product_manager_and_admin_read(self, pm_client, admin_api_client, name):
        assert pm_client.get(url(name)).status_code == 200
        assert admin_api_client.get(url(name)).status_code == 200


@pytest.mark.parametrize(("name", "query", "attr"), [
    ("overview", "start=2026-13-01", "start"),
    ("overview", "end=yesterday", "end"),
    ("items", "start=2026-02-01&end=2026-01-01", "start"),
    ("retention", "start=2023-01-01&end=2025-06-30", "end"),
    ("funnel", "steps=view", "steps"),
    ("funnel", "steps=view,,purchase", "steps"),
    ("funnel", "window_days=0", "window_days"),
    ("retention", "period=month", "period"),
    ("items", "order_by=price", "order_by"),
    ("recommendations", "compare=v1", "compare"),
    ("recommendations", "compare=v1,v1", "compare"),
    ("trends", "interval=hour", "interval"),
    ("trends", "measure=median", "measure"),
    ("trends", "events=a,b,c,d,e,f", "events"),
    ("trends", "events=view,,search", "events"),
    ("trends", "where=plan", "where"),
    ("trends", "where==pro", "where"),
    ("trends", "start=2023-01-01&end=2025-06-30", "end"),
    ("lifecycle", "interval=year", "interval"),
    ("overview", "end=0001-01-05", "end"),
    ("items", "start=0001-01-01&end=0001-01-05", "end"),
    ("lifecycle", "start=1899-12-31&end=1900-01-05", "start"),
    ("overview", "start=9999-12-20&end=9999-12-31", "end"),
    ("stickiness", "interval=day", "interval"),
    ("paths", "steps=6", "steps"),
    ("paths", "steps=0", "steps"),
    ("paths", "steps=two", "steps"),
    ("paths", "direction=sideways", "direction"),
    ("paths", "start=2023-01-01&end=2025-06-30", "end"),
])
def test_bad_parameters_are_400_in_the_error_shape(pm_client, name, query, attr):
    response = pm_client.get(f"{url(name)}?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert body["attr"] == attr
    assert body["detail"]


@pytest.mark.parametrize("name", ENDPOINTS)
@pytest.mark.parametrize("query", [
    f"start={EARLIEST_DAY}&end={EARLIEST_DAY + timedelta(days=30)}",
    f"start={LATEST_DAY - timedelta(days=30)}&end={LATEST_DAY}"])
def test_the_earliest_and_latest_days_accepted_are_answered(pm_client, name, query):
    """Each insight also reads the period before its range and past its end: at the
    bounds those still exist (a day nearer year 1 or 9999 failed with a server error, so
    bounds set wider fail here)."""
    assert pm_client.get(f"{url(name)}?{query}").status_code == 200


def test_two_years_is_the_longest_range(pm_client):
    end = date(2026, 1, 31)
    start = end - timedelta(days=730)
    response = pm_client.get(f"{url('overview')}?start={start}&end={end}")
    assert response.status_code == 200
    assert len(response.json()["days"]) == 731


def test_custom_event_type_seen_in_events_is_a_valid_step(pm_client):
    EventFactory(type="signup", item=None)
    assert pm_client.get(f"{url('funnel')}?steps=signup,purchase").status_code == 200


def test_a_step_or_version_never_seen_counts_nothing_rather_than_failing(pm_client):
    funnel = pm_client.get(f"{url('funnel')}?steps=view,teleport").json()
    assert [step["users"] for step in funnel["steps"]] == [0, 0]
    assert pm_client.get(f"{url('recommendations')}?compare=v1,nope").status_code == 200


def test_funnel_response(pm_client):
    shopper = EndUserFactory()
    item = ItemFactory(category="books")
    start = datetime(2026, 1, 5, 10, tzinfo=UTC)
    for offset, kind in enumerate(["view", "add_to_cart", "purchase"]):
        EventFactory(user=shopper, item=item, type=kind,
                     timestamp=start + timedelta(hours=offset))
    EventFactory(item=item, type="view", timestamp=start)

    response = pm_client.get(f"{url('funnel')}?start=2026-01-01&end=2026-01-31"
                             "&steps=view,add_to_cart,purchase&window_days=7"
                             "&breakdown=category")

    assert response.status_code == 200
    body = response.json()
    assert [(step["name"], step["users"], step["conversion"]) for step in body["steps"]] == [
        ("view", 2, 1.0), ("add_to_cart", 1, 0.5), ("purchase", 1, 1.0)]
    assert body["steps"][2]["median_seconds_from_previous"] == 3600
    assert body["breakdown"][0]["category"] == "books"

    without = pm_client.get(f"{url('funnel')}?start=2026-01-01&end=2026-01-31").json()
    assert without["steps"] == body["steps"]
    assert without["breakdown"] == []


def test_default_range_is_the_last_30_days(pm_client):
    EventFactory(timestamp=timezone.now())
    EventFactory(timestamp=timezone.now() - timedelta(days=40))
    body = pm_client.get(url("overview")).json()
    assert len(body["days"]) == 30
    assert body["days"][-1]["date"] == timezone.localdate().isoformat()
    assert body["events"] == 1


def test_category_filter(pm_client):
    EventFactory(item=ItemFactory(category="books"), type="purchase", value=10,
                 timestamp=datetime(2026, 1, 3, tzinfo=UTC))
    EventFactory(item=ItemFactory(category="toys"), type="purchase", value=99,
                 timestamp=datetime(2026, 1, 3, tzinfo=UTC))
    body = pm_client.get(f"{url('items')}?start=2026-01-01&end=2026-01-31&category=books"
                         ).json()
    assert [row["category"] for row in body["items"]] == ["books"]
    assert body["categories"][0]["category"] == "books"
    assert body["categories"][0]["revenue"] == 10.0


def test_schema_documents_the_endpoints(admin_api_client):
    response = admin_api_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for name in ENDPOINTS:
        assert f"/api/v1/analytics/{name}" in paths
    parameters = {p["name"] for p in paths["/api/v1/analytics/funnel"]["get"]["parameters"]}
    assert {"start", "end", "category", "steps", "window_days"} <= parameters


def test_trends_of_a_custom_event_broken_down_by_a_property(pm_client):
    shopper = EndUserFactory()
    for plan, source in (("pro", "ads"), ("pro", "ads"), ("free", "ads"), ("pro", "mail")):
        EventFactory(user=shopper, type="signup", properties={"plan": plan, "utm_source": source},
                     timestamp=datetime(2026, 1, 5, 12, tzinfo=UTC))

    body = pm_client.get(f"{url('trends')}?start=2026-01-05&end=2026-01-11&events=signup"
                         "&interval=week&breakdown=plan&where=utm_source%3Dads"
                         "&compare=true").json()

    assert body["periods"] == ["2026-01-05"]
    assert [(row["breakdown_value"], row["values"], row["previous_total"])
            for row in body["series"]] == [("pro", [2], 0), ("free", [1], 0)]
    # A property key nobody sends is an empty answer, not an error.
    unknown = pm_client.get(f"{url('trends')}?events=signup&breakdown=nonexistent")
    assert unknown.status_code == 200


def test_a_user_timeline_for_product_managers_only_and_404_for_an_unknown_id(pm_client, anonymous):
    shopper = EndUserFactory(user_id="u-42")
    EventFactory(user=shopper, type="view")

    assert anonymous.get(url("users/u-42/timeline")).status_code in (401, 403)
    body = pm_client.get(url("users/u-42/timeline")).json()
    assert body["user_id"] == "u-42" and body["event_count"] == 1

    missing = pm_client.get(url("users/nobody/timeline"))
    assert missing.status_code == 404
    assert missing.json()["type"] == "client_error" and "nobody" in missing.json()["detail"]
    # No id can hold a NUL; PostgreSQL's driver refuses one in a query.
    assert pm_client.get(url("users/u%00-42/timeline")).status_code == 404


def test_the_timeline_of_a_user_id_holding_slashes(pm_client):
    shopper = EndUserFactory(user_id="gid://shopify/Customer/1")
    EventFactory(user=shopper, type="view")

    body = pm_client.get(url("users/gid://shopify/Customer/1/timeline")).json()

    assert body["user_id"] == "gid://shopify/Customer/1" and body["event_count"] == 1


def test_paths_after_an_event_with_drop_off(pm_client):
    when = datetime(2026, 1, 5, 12, tzinfo=UTC)
    for name, kinds in (("ann", ["add_to_cart", "purchase"]), ("bob", ["add_to_cart"])):
        shopper = EndUserFactory(user_id=name)
        for minute, kind in enumerate(kinds):
            EventFactory(user=shopper, type=kind, timestamp=when + timedelta(minutes=minute))

    body = pm_client.get(f"{url('paths')}?start=2026-01-01&end=2026-01-31"
                         "&event=add_to_cart&steps=2").json()

    assert body["persons"] == 2 and body["direction"] == "after", body
    assert body["nodes"][0] == {"step": 0, "event_type": "add_to_cart", "persons": 2,
                                "continued": 1, "dropped_off": 1}
    assert body["links"] == [{"step": 0, "source": "add_to_cart", "target": "purchase",
                              "persons": 1}]
    # An event type nobody sent is an empty answer, not an error.
    nothing = pm_client.get(f"{url('paths')}?event=teleport&direction=before").json()
    assert nothing["persons"] == 0 and nothing["nodes"] == []


def sleeps_in_the_database(**filters):
    busy_statement(2)
    return {}


def test_a_question_past_the_statement_time_limit_is_stopped_with_a_503_that_says_so(
        pm_client, settings, monkeypatch):
    settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 0.05
    with monkeypatch.context() as patched:
        patched.setattr(overview, "overview", sleeps_in_the_database)
        response = pm_client.get(url("overview"))

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "query_timeout" and "0.05 s" in body["detail"]
    assert "Retry-After" not in response  # the same question would be stopped again
    settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 30
    assert pm_client.get(url("overview")).status_code == 200  # the connection still serves
