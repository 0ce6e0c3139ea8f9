"""Dashboards in headless Chromium (Debian's /usr/bin/chromium driven by Playwright): log in,
open every page, check the charts are drawn and nothing fails in the page's JavaScript."""

from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.models import EndUser, Event, Item
from recommender.models import Impression, ModelVersion
from tests.conftest import watch_errors

PAGES = ["overview", "trends", "funnels", "retention", "lifecycle", "stickiness", "paths",
         "items", "sentiment", "recommendations"]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def shop_data():
    now = timezone.now() - timedelta(hours=2)
    version = ModelVersion.objects.create(kind="recommender", name="tt-1", artifact_path="a",
                                          checksum="c")
    shown = Impression.objects.create(user_id="u0", item_ids=["sku-0"], model_version=version,
                                      strategy="two_tower", created_at=now)
    items = [Item.objects.create(item_id=f"sku-{n}", title=f"Item {n}",
                                 category=("books", "toys")[n % 2]) for n in range(4)]
    events = []
    for n in range(12):
        first_seen = now - timedelta(days=n * 2)
        shopper = EndUser.objects.create(user_id=f"u{n}", first_seen=first_seen)
        thing = items[n % 4]
        plan = [("view", first_seen), ("add_to_cart", first_seen + timedelta(minutes=5)),
                ("view", now), ("click", now)]
        if n % 3 == 0:
            plan.append(("purchase", first_seen + timedelta(minutes=9)))
        for kind, when in plan:
            events.append(Event(user=shopper, item=thing, type=kind, timestamp=when,
                                received_at=when, value=20.0 if kind == "purchase" else None,
                                rec_id=shown.rec_id if kind == "click" else None))
        label = ("negative", "neutral", "positive")[n % 3]
        events.append(Event(user=shopper, item=thing, type="review", timestamp=now,
                            received_at=now, value=1 + n % 5, text=f"review {n}",
                            sentiment_label=label, sentiment_score=(n % 3) / 2))
    Event.objects.bulk_create(events)


def _log_in(page, base_url: str) -> None:
    page.goto(f"{base_url}/login/")
    page.fill("input[name=username]", "pm")
    page.fill("input[name=password]", "pm-password-1")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/dashboards/overview/")


# Counts canvases that Chart.js has drawn on, with at least one non-transparent pixel.
DRAWN_CANVASES = """() => Array.from(document.querySelectorAll('canvas[data-chart]')).map(c => {
    const chart = window.Chart && window.Chart.getChart(c);
    if (!chart || !c.width || !c.height) return false;
    const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) return true; }
    return false;
})"""


def test_every_dashboard_draws_its_charts(live_server, pm_user, shop_data, browser):
    page = browser.new_page(viewport={"width": 1366, "height": 800})
    errors = watch_errors(page)
    _log_in(page, live_server.url)

    for name in PAGES:
        response = page.goto(f"{live_server.url}/dashboards/{name}/")
        assert response.status == 200, name
        drawn = page.evaluate(DRAWN_CANVASES)
        assert drawn and all(drawn), f"{name}: charts drawn {drawn}"
        assert page.locator("table").count() >= 1, name
    assert page.locator("table.heatmap").count() == 0  # on the retention page only
    page.goto(f"{live_server.url}/dashboards/retention/")
    assert page.locator("table.heatmap td.cell").count() > 0
    assert errors == []


def test_a_user_timeline_is_looked_up_and_drawn(live_server, pm_user, shop_data, browser):
    page = browser.new_page()
    errors = watch_errors(page)
    _log_in(page, live_server.url)

    page.goto(f"{live_server.url}/dashboards/users/")
    page.fill("input[name=user_id]", "u3")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()

    assert "user_id=u3" in page.url
    drawn = page.evaluate(DRAWN_CANVASES)
    assert drawn and all(drawn)
    assert page.locator("#table-events tbody tr").count() >= 4
    assert errors == []


def test_filters_and_empty_state(live_server, pm_user, browser):
    page = browser.new_page()
    errors = watch_errors(page)
    _log_in(page, live_server.url)
    assert "No events yet" in page.content()

    page.fill("input[name=start]", "2026-01-01")
    page.fill("input[name=end]", "2026-01-31")
    page.click("form.filters button[type=submit]")
    page.wait_for_load_state()
    assert "start=2026-01-01" in page.url
    assert errors == []
