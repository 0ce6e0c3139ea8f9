import csv
import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from analytics.insights import overview
from ingestion.models import Event
from recommender.models import Impression, ModelVersion
from tests.database import busy_statement
from tests.factories import EndUserFactory, EventFactory, ItemFactory

pytestmark = pytest.mark.django_db

PAGES = ["overview", "trends", "funnels", "retention", "lifecycle", "stickiness", "paths",
         "items", "sentiment", "recommendations"]


def page_url(name: str) -> str:
    return f"/dashboards/{name}/"


@pytest.fixture
def pm_browser(pm_user) -> Client:
    client = Client()
    client.force_login(pm_user)
    return client


@pytest.fixture
def admin_browser(admin_user) -> Client:
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def activity():
    """A day of shopping with reviews and one attributed recommendation."""
    now = timezone.now() - timedelta(hours=1)
    version = ModelVersion.objects.create(kind="recommender", name="tt-1", artifact_path="a",
                                          checksum="c")
    shown = Impression.objects.create(user_id="u", item_ids=["book"], model_version=version,
                                      strategy="two_tower", created_at=now)
    book = ItemFactory(item_id="book", title="A Book", category="books")
    for index in range(3):
        shopper = EndUserFactory(first_seen=now - timedelta(days=8 * index))
        for minutes, kind in enumerate(["view", "add_to_cart", "purchase"]):
            EventFactory(user=shopper, item=book, type=kind, value=9.5,
                         timestamp=now + timedelta(minutes=minutes),
                         rec_id=shown.rec_id if kind != "view" else None)
        EventFactory(user=shopper, item=book, type="view", timestamp=now - timedelta(days=45))
        EventFactory(user=shopper, item=book, type="review", value=1, text="Awful binding",
                     properties={"review_title": "Pages fell out"},
                     sentiment_label="negative", sentiment_score=0.1, timestamp=now)


def test_root_redirects_to_overview(pm_browser):
    response = pm_browser.get("/")
    assert response.status_code == 302
    assert response["Location"] == page_url("overview")


def test_login_page_renders_and_logs_in(pm_user):
    client = Client()
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "pm", "password": "pm-password-1"})
    assert response.status_code == 302
    assert response["Location"] == page_url("overview")


@pytest.mark.parametrize("name", PAGES)
class TestPages:
    def test_anonymous_goes_to_login(self, client, name):
        response = client.get(page_url(name))
        assert response.status_code == 302
        assert response["Location"].startswith("/login/?next=")

    def test_login_without_role_is_forbidden(self, client, name):
        client.force_login(get_user_model().objects.create_user(username="nobody"))
        assert client.get(page_url(name)).status_code == 403

    def test_empty_state_says_what_to_do(self, pm_browser, name):
        response = pm_browser.get(page_url(name))
        assert response.status_code == 200
        content = response.content.decode()
        if name == "recommendations":
            assert "No recommendations served yet" in content
        else:
            assert "No events yet" in content
            assert "POST /api/v1/events" in content
            assert "seed_demo" in content

    def test_renders_data_charts_and_csv_links(self, pm_browser, activity, name):
        response = pm_browser.get(page_url(name))
        assert response.status_code == 200
        content = response.content.decode()
        assert "No events yet" not in content
        assert 'id="chart-data"' in content
        assert "<canvas" in content
        assert "format=csv&amp;table=" in content
        assert "vendor/chartjs/chart.umd.min.js" in content

    def test_bad_filters_show_an_error(self, pm_browser, name):
        response = pm_browser.get(page_url(name) + "?start=2026-02-01&end=2026-01-01")
        assert response.status_code == 400
        assert "start must be on or before end" in response.content.decode()


def test_staff_see_admin_links_product_managers_do_not(pm_browser, admin_browser):
    staff_page = admin_browser.get(page_url("overview")).content.decode()
    pm_page = pm_browser.get(page_url("overview")).content.decode()
    for link in ('href="/ops/jobs/"', 'href="/ops/models/"', 'href="/admin/"'):
        assert link in staff_page
        assert link not in pm_page
    assert 'action="/logout/"' in pm_page


def test_overview_shows_numbers(pm_browser, activity):
    content = pm_browser.get(page_url("overview")).content.decode()
    assert "28.50" in content  # revenue: three purchases of 9.50


def test_csv_download(pm_browser, activity):
    response = pm_browser.get(page_url("funnels") + "?format=csv&table=steps")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    # A byte order mark first, so Excel reads the file as UTF-8.
    assert response.content.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[0][:2] == ["Step", "Users"]
    assert rows[1][:2] == ["view", "3"]
    assert rows[3][:2] == ["purchase", "3"]


def test_the_funnels_category_breakdown_is_shown_when_asked_for(pm_browser, activity):
    plain = pm_browser.get(page_url("funnels")).content.decode()
    response = pm_browser.get(page_url("funnels")
                              + "?breakdown=category&format=csv&table=by-category")

    assert "By item category (every step" not in plain
    assert 'name="breakdown" value="category">' in plain  # the box that asks for it
    rows = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert rows[1] == ["books", "3", "3", "3", "1.0"]


def test_csv_cells_a_spreadsheet_would_run_as_formulas_are_quoted(pm_browser):
    shopper = EndUserFactory(user_id="=cmd")
    book = ItemFactory(item_id="book", title="@SUM(A1)", category="-books")
    EventFactory(user=shopper, item=book, type="review", value=-2.0, text="=HYPERLINK(\"x\")",
                 properties={"city": "Zürich"}, timestamp=timezone.now() - timedelta(hours=1))

    download = pm_browser.get(page_url("users") + "?user_id=%3Dcmd&format=csv&table=events")
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    header, event = rows[0], dict(zip(rows[0], rows[1]))
    assert header[:3] == ["Time", "Type", "Id"]
    assert (event["Id"], event["Item"], event["Text"]) == ("'=cmd", "'@SUM(A1)",
                                                          "'=HYPERLINK(\"x\")")
    assert event["Value"] == "-2.0"  # numbers are not formulas
    assert event["Properties"] == '{"city": "Zürich"}'
    items_csv = pm_browser.get(page_url("items") + "?format=csv&table=items"
                               ).content.decode("utf-8-sig")
    assert "'-books" in items_csv


def test_csv_unknown_table(pm_browser):
    response = pm_browser.get(page_url("items") + "?format=csv&table=nope")
    assert response.status_code == 400


def test_retention_heat_map_and_sentiment_reviews(pm_browser, activity):
    retention = pm_browser.get(page_url("retention")).content.decode()
    assert "data-heatmap" in retention
    sentiment = pm_browser.get(page_url("sentiment")).content.decode()
    assert "<strong>Pages fell out</strong> <q>Awful binding</q>" in sentiment


def test_sentiment_reviews_show_half_star_ratings_as_given(pm_browser):
    scarf = ItemFactory()
    for rating in (1.5, 1, 1):  # the page lists items with three reviews or more
        EventFactory(user=EndUserFactory(), item=scarf, type="review", value=rating,
                     text="Fell apart", sentiment_label="negative",
                     sentiment_score=0.1 if rating == 1.5 else 0.2,
                     timestamp=timezone.now() - timedelta(hours=1))

    sentiment = pm_browser.get(page_url("sentiment")).content.decode()

    assert "rated 1.5" in sentiment


def test_recommendations_page_compares_versions(pm_browser, activity):
    ModelVersion.objects.create(kind="recommender", name="tt-2", artifact_path="b",
                                checksum="d")
    Impression.objects.create(rec_id=uuid.uuid4(), user_id="u", item_ids=[],
                              model_version=ModelVersion.objects.get(name="tt-2"),
                              strategy="two_tower", created_at=timezone.now())
    content = pm_browser.get(page_url("recommendations") + "?compare=tt-1,tt-2"
                             ).content.decode()
    assert "95% confidence interval" in content
    assert "Purchase rate: <strong>tt-1</strong>" in content
    assert Event.objects.filter(rec_id__isnull=False).exists()


def test_user_timeline_page_looks_a_user_up_and_downloads_their_events(pm_browser, activity):
    user_id = Event.objects.filter(type="purchase").first().user.user_id

    page = pm_browser.get(page_url("users") + f"?user_id={user_id}").content.decode()
    assert "Events, newest first" in page and "Recommendations now" in page
    assert "<canvas" in page

    download = pm_browser.get(page_url("users") + f"?user_id={user_id}&format=csv&table=events")
    rows = list(csv.reader(io.StringIO(download.content.decode("utf-8-sig"))))
    assert rows[0][:2] == ["Time", "Type"] and "purchase" in {row[1] for row in rows[1:]}
    assert download["Content-Disposition"].startswith('attachment; filename="users-events')

    unknown = pm_browser.get(page_url("users") + "?user_id=nobody").content.decode()
    assert "No user with id" in unknown
    assert pm_browser.get(page_url("users")).status_code == 200


def test_user_timeline_counts_events_per_day_in_the_shops_time_zone(pm_browser, settings):
    settings.TIME_ZONE = "Asia/Tokyo"
    shopper = EndUserFactory(user_id="late-shopper")
    # 20:00 UTC on 1 March is 05:00 on 2 March in Tokyo.
    EventFactory(user=shopper, type="view", timestamp=datetime(2026, 3, 1, 20, 0, tzinfo=UTC))

    response = pm_browser.get(page_url("users") + "?user_id=late-shopper")

    assert response.context["charts"][0]["labels"] == ["2026-03-02"]
    # The events table tells the same local time.
    assert response.context["tables"][0]["rows"][0][0] == "2026-03-02T05:00:00+09:00"


def test_the_items_chart_shows_what_the_items_were_ranked_by(pm_browser, activity):
    by_views = pm_browser.get(page_url("items")).context["charts"][0]
    by_revenue = pm_browser.get(page_url("items") + "?order_by=revenue").context["charts"][0]

    assert by_views["title"] == "Top items by views"
    assert [dataset["label"] for dataset in by_views["datasets"]] == ["Views", "Purchases"]
    assert by_revenue["title"] == "Top items by revenue"
    assert [(dataset["label"], dataset["data"]) for dataset in by_revenue["datasets"]] == [
        ("Revenue", [28.5])]
    by_conversion = pm_browser.get(page_url("items") + "?order_by=conversion").context["charts"][0]
    assert (by_conversion["title"], by_conversion["percent"]) == (
        "Top items by buyers / viewers", True)
    assert not by_revenue["percent"]


def test_the_paths_card_names_the_step_most_persons_reached_next(pm_browser):
    now = timezone.now() - timedelta(hours=2)
    # Two persons go view -> add_to_cart (the largest single link); three reach view second,
    # each from another first event.
    for name, first, second in [("a", "view", "add_to_cart"), ("b", "view", "add_to_cart"),
                                ("c", "click", "view"), ("d", "rating", "view"),
                                ("e", "review", "view")]:
        shopper = EndUserFactory(user_id=name)
        EventFactory(user=shopper, type=first, timestamp=now)
        EventFactory(user=shopper, type=second, timestamp=now + timedelta(minutes=1))

    cards = pm_browser.get(page_url("paths")).context["cards"]

    assert cards[1]["label"] == "Most common step after"
    assert cards[1]["value"] == "view"


def test_the_trends_form_applied_as_it_comes_with_empty_breakdown_and_filter(pm_browser, activity):
    response = pm_browser.get(page_url("trends") + "?events=view,purchase&measure=count"
                              "&interval=day&breakdown=&where=&chart=line")

    assert response.status_code == 200, response.content.decode()[:500]
    assert "Events per day" in response.content.decode()


def test_trends_per_period_download_holds_each_periods_counterpart_when_compared(pm_browser):
    EventFactory(type="signup", item=None, timestamp=datetime(2026, 1, 7, 12, tzinfo=UTC))
    EventFactory(type="signup", item=None, timestamp=datetime(2025, 12, 24, 12, tzinfo=UTC))

    rows = list(csv.reader(io.StringIO(pm_browser.get(
        page_url("trends") + "?events=signup&interval=week&compare=true&start=2026-01-07"
        "&end=2026-01-13&format=csv&table=periods").content.decode("utf-8-sig"))))

    assert rows == [["Period", "signup", "Previous period", "signup (previous period)"],
                    ["2026-01-05", "1", "2025-12-22", "1"], ["2026-01-12", "0", "2025-12-29", "0"]]


def test_paths_page_draws_a_sankey_of_the_steps_and_downloads_them(pm_browser, activity):
    response = pm_browser.get(page_url("paths") + "?event=add_to_cart&steps=2")

    content = response.content.decode()
    assert response.status_code == 200
    assert '"type": "sankey"' in content and "chartjs-chart-sankey.min.js" in content
    assert "add_to_cart → purchase" in content
    rows = list(csv.reader(io.StringIO(pm_browser.get(
        page_url("paths") + "?event=add_to_cart&steps=2&format=csv&table=steps")
        .content.decode("utf-8-sig"))))
    assert rows[0] == ["Step", "Event", "Persons", "Went on", "Dropped off", "Drop-off rate"]
    assert rows[1][:5] == ["0", "add_to_cart", "3", "3", "0"]


def test_filter_fields_suggest_the_event_types_keys_and_values_sent(pm_browser):
    for plan in ("pro", "pro", "free"):
        EventFactory(type="signup", item=None, properties={"plan": plan, "seats": 3,
                                                             "trial": True})

    content = pm_browser.get(page_url("trends")).content.decode()

    assert '<option value="signup">' in content
    assert '<option value="plan">' in content
    assert content.index('value="plan=pro"') < content.index('value="plan=free"')
    assert 'value="seats=3"' in content and "trial=" not in content
    assert '<option value="signup">' in pm_browser.get(page_url("paths")).content.decode()


def test_a_fresh_demo_fills_every_dashboard_and_shows_the_ab_test_won(
        pm_browser, django_capture_on_commit_callbacks):
    from recommender.recommendations import reset_caches

    reset_caches()  # popular items are cached per process
    with django_capture_on_commit_callbacks(execute=True):  # reviews are scored after commit
        call_command("seed_demo", stdout=io.StringIO())
    user_id = Event.objects.filter(type="purchase").last().user.user_id

    for name in [*PAGES, "users"]:
        query = f"?user_id={user_id}" if name == "users" else ""
        content = pm_browser.get(page_url(name) + query).content.decode()
        assert "empty-state" not in content, name
        assert 'class="empty-table"' not in content, name
        assert '"data": []' not in content.split('id="chart-data"')[-1], name
    recommendations = pm_browser.get(page_url("recommendations")).content.decode()
    assert "demo-two-tower-2" in recommendations and "demo-two-tower-1" in recommendations
    assert "The difference is statistically significant at 95%." in recommendations


def test_a_page_past_the_statement_time_limit_says_to_narrow_the_question(
        pm_browser, settings, monkeypatch):
    def sleeps_in_the_database(**filters):
        busy_statement(2)

    settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 0.05
    with monkeypatch.context() as patched:
        patched.setattr(overview, "overview", sleeps_in_the_database)
        response = pm_browser.get(page_url("overview"))

    assert response.status_code == 503
    assert "ran longer than 0.05 s and was stopped" in response.content.decode()
    settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 30
    assert pm_browser.get(page_url("overview")).status_code == 200


def test_a_range_given_by_its_end_alone_shows_the_start_it_was_given(pm_browser):
    page = pm_browser.get(page_url("overview") + "?end=2024-03-31").content.decode()

    # The 30 days ending on the 31st; the form's start was today's 30 days before.
    assert 'name="start" value="2024-03-02"' in page
    assert 'name="end" value="2024-03-31"' in page
