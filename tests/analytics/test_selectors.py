"""Each selector against a small hand-built event set whose answers are worked out by hand."""

import math
import uuid
from datetime import UTC, date, datetime

import pytest

from analytics import selectors
from analytics.selectors import DateRange
from ingestion.models import EndUser, Event, Item
from recommender.models import Impression, ModelVersion

pytestmark = pytest.mark.django_db

JANUARY = DateRange(start=date(2026, 1, 1), end=date(2026, 1, 31))


def at(day: int, hour: int = 12, minute: int = 0, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def user(name: str, first_seen: datetime | None = None) -> EndUser:
    return EndUser.objects.create(user_id=name, first_seen=first_seen)


def item(name: str, category: str = "toys") -> Item:
    return Item.objects.create(item_id=name, title=name.title(), category=category)


def event(who: EndUser, kind: str, when: datetime, thing: Item | None = None,
          **fields) -> Event:
    return Event.objects.create(user=who, type=kind, timestamp=when, received_at=when,
                                item=thing, **fields)


class TestDateRange:
    def test_covers_whole_days_and_knows_the_previous_period(self):
        week = DateRange(start=date(2026, 1, 8), end=date(2026, 1, 14))
        assert week.days == 7
        assert week.end_before == datetime(2026, 1, 15, tzinfo=UTC)
        assert week.previous() == DateRange(start=date(2026, 1, 1), end=date(2026, 1, 7))

    def test_default_is_the_last_30_days(self):
        default = selectors.default_date_range(today=date(2026, 3, 30))
        assert (default.start, default.end) == (date(2026, 3, 1), date(2026, 3, 30))


class TestOverview:
    def test_active_new_returning_events_and_revenue(self):
        book = item("book", "books")
        toy = item("toy")
        old = user("old", first_seen=at(1, month=12, year=2025))
        new = user("new", first_seen=at(30, hour=9))
        event(old, "view", at(30, 8), toy)
        event(old, "purchase", at(30, 9), toy, value=20.0)
        event(new, "view", at(30, 9), book)
        event(new, "purchase", at(30, 10), book, value=5.5)
        event(new, "view", at(31, 10), book)
        event(old, "view", at(20), book)

        result = selectors.overview(date_range=JANUARY)

        day_30 = result["days"][29]
        assert day_30["active_users"] == 2
        assert (day_30["new_users"], day_30["returning_users"]) == (1, 1)
        assert day_30["events_by_type"] == {"view": 2, "purchase": 2}
        assert (day_30["purchases"], day_30["revenue"]) == (2, 25.5)
        assert result["days"][0]["active_users"] == 0
        assert (result["dau"], result["wau"], result["mau"]) == (1, 2, 2)
        assert result["revenue"] == 25.5
        assert result["stickiness"] == pytest.approx((1 + 2 + 1) / 31 / 2)

    def test_category_filter_keeps_only_its_items(self):
        book = item("book", "books")
        toy = item("toy")
        reader = user("reader", first_seen=at(2))
        event(reader, "purchase", at(2), book, value=10.0)
        event(reader, "purchase", at(2), toy, value=99.0)

        result = selectors.overview(date_range=JANUARY, category="books")

        assert result["revenue"] == 10.0
        assert result["events_by_type"] == {"purchase": 1}


class TestFunnel:
    @pytest.fixture
    def shop(self):
        book, toy = item("book", "books"), item("toy")
        # Completes every step: gaps 1 hour, then 23 hours.
        u1 = user("u1")
        event(u1, "view", at(2, 10), book)
        event(u1, "add_to_cart", at(2, 11), book)
        event(u1, "purchase", at(3, 10), book)
        # Cart before the view and no cart after it: stops at step 1.
        u2 = user("u2")
        event(u2, "add_to_cart", at(1, 9), toy)
        event(u2, "view", at(2, 10), toy)
        event(u2, "purchase", at(2, 12), toy)
        # Cart 9 days after the first view: outside the 7-day window.
        u3 = user("u3")
        event(u3, "view", at(5), toy)
        event(u3, "add_to_cart", at(14), toy)
        # Purchase 10 days after the first view: outside the window.
        u4 = user("u4")
        event(u4, "view", at(10, 8), toy)
        event(u4, "add_to_cart", at(10, 9), toy)
        event(u4, "purchase", at(20), toy)
        # Purchase before the cart: stops at step 2, gap 2 hours.
        u5 = user("u5")
        event(u5, "view", at(12, 12), toy)
        event(u5, "purchase", at(12, 13), toy)
        event(u5, "add_to_cart", at(12, 14), toy)
        # Views a book, carts a toy 3 hours later: counts overall, not within one category.
        u7 = user("u7")
        event(u7, "view", at(15, 10), book)
        event(u7, "add_to_cart", at(15, 13), toy)
        # Only viewed before the range: never enters the funnel.
        u6 = user("u6")
        event(u6, "view", at(30, month=12, year=2025), toy)
        event(u6, "add_to_cart", at(2), toy)

    def test_strict_order_and_window(self, shop):
        result = selectors.funnel(date_range=JANUARY,
                                  steps=["view", "add_to_cart", "purchase"], window_days=7)

        steps = result["steps"]
        assert [step["users"] for step in steps] == [6, 4, 1]
        assert [step["conversion"] for step in steps] == [1.0, 4 / 6, 1 / 4]
        assert [step["overall_conversion"] for step in steps] == [1.0, 4 / 6, 1 / 6]
        assert result["overall_conversion"] == pytest.approx(1 / 6)
        # Gaps to the cart: 1h, 1h, 2h, 3h -> median 1.5h; to the purchase: 23h.
        assert steps[1]["median_seconds_from_previous"] == 5400
        assert steps[2]["median_seconds_from_previous"] == 23 * 3600
        assert steps[0]["median_seconds_from_previous"] is None

    def test_longer_window_lets_late_steps_in(self, shop):
        result = selectors.funnel(date_range=JANUARY,
                                  steps=["view", "add_to_cart", "purchase"], window_days=14)
        assert [step["users"] for step in result["steps"]] == [6, 5, 2]

    def test_breakdown_keeps_every_step_in_one_category(self, shop):
        result = selectors.funnel(date_range=JANUARY,
                                  steps=["view", "add_to_cart", "purchase"], window_days=7)
        breakdown = {row["category"]: [step["users"] for step in row["steps"]]
                     for row in result["breakdown"]}
        assert breakdown == {"toys": [4, 2, 0], "books": [2, 1, 1]}

    def test_category_filter(self, shop):
        result = selectors.funnel(date_range=JANUARY, steps=["view", "add_to_cart"],
                                  window_days=7, category="books")
        assert [step["users"] for step in result["steps"]] == [2, 1]

    def test_no_events(self):
        result = selectors.funnel(date_range=JANUARY, steps=["view", "purchase"])
        assert [step["users"] for step in result["steps"]] == [0, 0]
        assert result["steps"][1]["conversion"] is None
        assert result["breakdown"] == []


class TestRetention:
    def test_weekly_cohorts(self):
        three_weeks = DateRange(start=date(2026, 1, 5), end=date(2026, 1, 25))
        a = user("a", first_seen=at(5))
        for day in (5, 13, 20):
            event(a, "view", at(day))
        b = user("b", first_seen=at(6))
        event(b, "view", at(6))
        event(b, "view", at(21))
        c = user("c", first_seen=at(12))
        event(c, "view", at(12))
        event(c, "view", at(19))
        veteran = user("veteran", first_seen=at(20, month=12, year=2025))
        event(veteran, "view", at(6))

        result = selectors.retention(date_range=three_weeks, period="week")

        assert result["periods"] == 3
        assert [(row["cohort"], row["users"], row["active"], row["retention"])
                for row in result["cohorts"]] == [
            (date(2026, 1, 5), 2, [2, 1, 2], [1.0, 0.5, 1.0]),
            (date(2026, 1, 12), 1, [1, 1], [1.0, 1.0]),
        ]

    def test_daily_cohorts(self):
        two_days = DateRange(start=date(2026, 1, 5), end=date(2026, 1, 6))
        for name in ("a", "b"):
            event(user(name, first_seen=at(5)), "view", at(5))
        event(EndUser.objects.get(user_id="a"), "view", at(6))

        result = selectors.retention(date_range=two_days, period="day")

        assert result["cohorts"][0]["retention"] == [1.0, 0.5]

    def test_category_filter_counts_only_users_active_in_it(self):
        one_week = DateRange(start=date(2026, 1, 5), end=date(2026, 1, 18))
        book, toy = item("book", "books"), item("toy")
        reader = user("reader", first_seen=at(5))
        event(reader, "view", at(5), book)
        event(reader, "view", at(12), toy)  # back in week 2, but not for books
        player = user("player", first_seen=at(6))
        event(player, "view", at(6), toy)

        result = selectors.retention(date_range=one_week, period="week", category="books")

        assert [(row["cohort"], row["users"], row["active"]) for row in result["cohorts"]] == [
            (date(2026, 1, 5), 1, [1, 0])]


class TestItems:
    @pytest.fixture
    def catalog(self):
        book, toy = item("book", "books"), item("toy")
        viewers = [user(f"v{n}") for n in range(4)]
        for who in viewers:
            event(who, "view", at(20), book)
        event(viewers[0], "view", at(21), book)
        event(viewers[0], "purchase", at(21), book, value=12.0)
        event(viewers[1], "purchase", at(21), book, value=8.0)
        event(viewers[0], "review", at(22), book, value=5, sentiment_label="positive",
              sentiment_score=0.9)
        event(viewers[1], "review", at(22), book, value=2, sentiment_label="negative",
              sentiment_score=0.1)
        event(viewers[2], "rating", at(22), book, value=2)
        event(viewers[0], "view", at(25), toy)
        # Last year's views make the book's growth smaller than the toy's.
        event(viewers[3], "view", at(10, month=12, year=2025), book)
        return book, toy

    def test_item_performance(self, catalog):
        rows = selectors.item_performance(date_range=JANUARY)
        book = rows[0]
        assert (book["item_id"], book["views"], book["viewers"]) == ("book", 5, 4)
        assert (book["purchasers"], book["conversion"], book["revenue"]) == (2, 0.5, 20.0)
        assert book["average_rating"] == 3.0
        assert book["sentiment_shares"] == {"negative": 0.5, "neutral": 0.0, "positive": 0.5}
        assert rows[1]["item_id"] == "toy"
        assert rows[1]["conversion"] == 0.0
        by_revenue = selectors.item_performance(date_range=JANUARY, order_by="revenue", limit=1)
        assert [row["item_id"] for row in by_revenue] == ["book"]

    def test_category_performance(self, catalog):
        rows = {row["category"]: row for row in
                selectors.category_performance(date_range=JANUARY)}
        assert rows["books"]["revenue"] == 20.0
        assert rows["toys"]["views"] == 1

    def test_trending_against_previous_period(self, catalog):
        rows = selectors.trending_items(date_range=JANUARY, min_views=1)
        assert [(row["item_id"], row["current_views"], row["previous_views"], row["growth"])
                for row in rows] == [("book", 5, 1, 4.0), ("toy", 1, 0, 1.0)]

    def test_category_users_are_distinct_across_its_items(self, catalog):
        book, _ = catalog
        novel = item("novel", "books")
        viewer = EndUser.objects.get(user_id="v0")
        event(viewer, "view", at(23), novel)
        event(viewer, "purchase", at(23), novel, value=5.0)
        rows = {row["category"]: row for row in
                selectors.category_performance(date_range=JANUARY)}
        books = rows["books"]
        assert (books["views"], books["viewers"]) == (6, 4)
        assert (books["purchases"], books["purchasers"], books["revenue"]) == (3, 2, 25.0)
        assert books["conversion"] == 0.5
        assert books["reviews"] == 2 and books["average_rating"] == 3.0
        # The previous period's views count for trending only.
        assert selectors.item_performance(date_range=JANUARY, category="books")[0]["views"] == 5

    def test_item_report_matches_the_three_selectors(self, catalog):
        report = selectors.item_report(date_range=JANUARY, order_by="conversion", limit=5,
                                       min_views=1)
        filters = {"date_range": JANUARY, "order_by": "conversion", "limit": 5}
        assert report["items"] == selectors.item_performance(**filters)
        assert report["categories"] == selectors.category_performance(**filters)
        assert report["trending"] == selectors.trending_items(date_range=JANUARY, min_views=1)
        assert [row["item_id"] for row in report["items"]] == ["book", "toy"]
        empty = selectors.item_report(date_range=DateRange(start=date(2025, 6, 1),
                                                           end=date(2025, 6, 2)))
        assert empty == {"items": [], "categories": [], "trending": []}

    def test_items_tied_on_the_ordering_keep_a_stable_order(self):
        for name in ["b", "a", "c"]:
            event(user(f"u{name}"), "view", at(20), item(name))
        first = [row["item_id"] for row in selectors.item_performance(date_range=JANUARY)]
        assert first == [row["item_id"] for row in selectors.item_performance(date_range=JANUARY)]
        assert sorted(first) == ["a", "b", "c"]

    def test_trending_ties_at_the_limit_go_by_item_id(self):
        # Created in reverse order so database ids disagree with the external ids.
        for name in ["d", "c", "b", "a"]:
            event(user(f"u{name}"), "view", at(20), item(name))
        rows = selectors.trending_items(date_range=JANUARY, min_views=1, limit=2)
        assert [row["item_id"] for row in rows] == ["a", "b"]


class TestSentiment:
    @pytest.fixture
    def reviews(self):
        grim, fine = item("grim", "books"), item("fine")
        people = [user(f"r{n}") for n in range(4)]
        for who, score in zip(people[:3], (0.05, 0.2, 0.1), strict=True):
            event(who, "review", at(3), grim, value=1, text=f"bad {score}",
                  sentiment_label="negative", sentiment_score=score)
        event(people[3], "review", at(4), grim, value=4, text="ok",
              sentiment_label="positive", sentiment_score=0.8)
        event(people[0], "review", at(4), fine, value=3, text="meh",
              sentiment_label="neutral", sentiment_score=0.5)
        event(people[1], "review", at(4), fine, value=5, text="great",
              sentiment_label="positive", sentiment_score=0.95)
        event(people[2], "review", at(4), fine, value=5, text="unscored")
        return grim, fine

    def test_trend_shares(self, reviews):
        trend = {row["date"]: row for row in
                 selectors.sentiment_trend(date_range=JANUARY)}
        assert trend[date(2026, 1, 3)]["shares"]["negative"] == 1.0
        assert trend[date(2026, 1, 4)]["reviews"] == 3
        assert trend[date(2026, 1, 4)]["shares"]["positive"] == pytest.approx(2 / 3)
        assert trend[date(2026, 1, 5)]["shares"]["positive"] is None

    def test_by_item_and_category(self, reviews):
        worst = selectors.sentiment_by_item(date_range=JANUARY, order="negative_share")
        assert [(row["item_id"], row["reviews"], row["negative_share"]) for row in worst] == [
            ("grim", 4, 0.75), ("fine", 2, 0.0)]
        only_fine = selectors.sentiment_by_item(date_range=JANUARY, item_ids=["fine"])
        assert only_fine[0]["sentiment_shares"] == {"negative": 0.0, "neutral": 0.5,
                                                    "positive": 0.5}
        categories = {row["category"]: row for row in
                      selectors.sentiment_by_category(date_range=JANUARY)}
        assert categories["books"]["negative"] == 3
        assert categories["toys"]["sentiment_shares"]["neutral"] == 0.5

    def test_worst_reviews_per_item(self, reviews):
        worst = selectors.negative_reviews_by_item(item_ids=["grim", "fine"], per_item=2)
        assert [review["text"] for review in worst["grim"]] == ["bad 0.05", "bad 0.1"]
        assert worst["fine"] == []

    def test_category_filter(self, reviews):
        trend = {row["date"]: row for row in
                 selectors.sentiment_trend(date_range=JANUARY, category="books")}
        assert trend[date(2026, 1, 4)]["reviews"] == 1  # grim's "ok"; fine is in toys
        assert trend[date(2026, 1, 4)]["shares"]["positive"] == 1.0
        summary = selectors.sentiment_summary(date_range=JANUARY, category="toys",
                                              min_reviews=1)
        assert (summary["reviews"], summary["shares"]["neutral"]) == (2, 0.5)
        assert [row["item_id"] for row in summary["most_negative_items"]] == ["fine"]

    def test_summary(self, reviews):
        summary = selectors.sentiment_summary(date_range=JANUARY, min_reviews=2)
        assert summary["reviews"] == 6
        assert summary["shares"]["negative"] == 0.5
        top = summary["most_negative_items"][0]
        assert top["item_id"] == "grim"
        assert len(top["worst_reviews"]) == 3


def impressions(version: ModelVersion | None, strategy: str, count: int) -> list[Impression]:
    return Impression.objects.bulk_create(
        Impression(rec_id=uuid.uuid4(), user_id="someone", item_ids=["book"],
                   model_version=version, strategy=strategy, created_at=at(10))
        for _ in range(count))


class TestRecommendations:
    @pytest.fixture
    def traffic(self):
        book = item("book", "books")
        shopper = user("shopper")
        v1 = ModelVersion.objects.create(kind="recommender", name="v1", artifact_path="a",
                                         checksum="x")
        v2 = ModelVersion.objects.create(kind="recommender", name="v2", artifact_path="b",
                                         checksum="y")
        shown_v1 = impressions(v1, "two_tower", 100)
        shown_v2 = impressions(v2, "two_tower", 80)
        impressions(None, "popular", 20)
        clicks = [(shown, "click") for shown in shown_v1[:30] + shown_v2[:16]]
        # A second click on the same response does not count twice.
        clicks.append((shown_v1[0], "click"))
        clicks.append((shown_v1[0], "purchase"))
        Event.objects.bulk_create(
            Event(user=shopper, item=book, type=kind, timestamp=at(11), received_at=at(11),
                  rec_id=shown.rec_id, value=40.0 if kind == "purchase" else None)
            for shown, kind in clicks)
        # A click without a rec_id is not attributed.
        event(shopper, "click", at(11), book)
        return v1, v2

    def test_attribution_through_rec_id(self, traffic):
        result = selectors.recommendation_performance(date_range=JANUARY)

        versions = {row["model_version"]: row for row in result["by_model_version"]}
        assert (versions["v1"]["impressions"], versions["v1"]["clicks"]) == (100, 30)
        assert (versions["v1"]["purchases"], versions["v1"]["revenue"]) == (1, 40.0)
        assert versions["v2"]["ctr"] == 0.2
        assert versions[None]["clicks"] == 0
        strategies = {row["strategy"]: row for row in result["by_strategy"]}
        assert strategies["two_tower"]["impressions"] == 180
        assert strategies["popular"]["impressions"] == 20
        assert (result["impressions"], result["clicks"], result["purchases"]) == (200, 46, 1)

    def test_ctr_and_purchase_rate_differences_have_confidence_intervals(self, traffic):
        comparison = selectors.recommendation_performance(
            date_range=JANUARY)["comparison"]

        assert (comparison["version_a"], comparison["version_b"]) == ("v1", "v2")
        margin = 1.959964 * math.sqrt(0.3 * 0.7 / 100 + 0.2 * 0.8 / 80)
        assert comparison["difference"] == pytest.approx(0.1)
        assert comparison["ci_low"] == pytest.approx(0.1 - margin, abs=1e-6)
        assert comparison["ci_high"] == pytest.approx(0.1 + margin, abs=1e-6)
        assert comparison["significant"] is False
        # Purchase rate: 1 of 100 (v1) against 0 of 80 (v2).
        purchases = comparison["purchase_rate_difference"]
        assert (comparison["purchase_rate_a"], comparison["purchase_rate_b"]) == (0.01, 0.0)
        purchase_margin = 1.959964 * math.sqrt(0.01 * 0.99 / 100)
        assert purchases["difference"] == pytest.approx(0.01)
        assert purchases["ci_low"] == pytest.approx(0.01 - purchase_margin, abs=1e-6)
        assert purchases["ci_high"] == pytest.approx(0.01 + purchase_margin, abs=1e-6)
        assert purchases["significant"] is False

    def test_explicit_comparison_order(self, traffic):
        comparison = selectors.recommendation_performance(
            date_range=JANUARY, compare=("v2", "v1"))["comparison"]
        assert comparison["difference"] == pytest.approx(-0.1)

    def test_category_filter_keeps_only_outcomes_on_its_items(self, traffic):
        toy = item("toy")
        shown = Impression.objects.filter(model_version__name="v2").first()
        event(EndUser.objects.get(user_id="shopper"), "purchase", at(12), toy,
              rec_id=shown.rec_id, value=15.0)

        books = selectors.recommendation_performance(date_range=JANUARY, category="books")
        toys = selectors.recommendation_performance(date_range=JANUARY, category="toys")

        assert (books["clicks"], books["purchases"], books["revenue"]) == (46, 1, 40.0)
        assert (toys["clicks"], toys["purchases"], toys["revenue"]) == (0, 1, 15.0)

    def test_significant_difference(self):
        result = selectors.proportion_difference(hits_a=500, total_a=1000, hits_b=400,
                                                 total_b=1000)
        assert result["significant"] is True
        assert result["ci_low"] == pytest.approx(0.1 - 1.959964 * math.sqrt(0.00049), abs=1e-6)

    def test_no_impressions(self):
        result = selectors.recommendation_performance(date_range=JANUARY)
        assert result["impressions"] == 0
        assert result["ctr"] is None
        assert result["comparison"] is None


class TestLinkedIdentities:
    """A visitor who browses anonymously, signs in and buys is one user everywhere."""

    @pytest.fixture
    def signed_in_shopper(self):
        from ingestion.services import link_identities

        toy = item("toy")
        anonymous = user("anon-1", first_seen=at(10, 9))
        known = user("u1", first_seen=at(10, 11))
        event(anonymous, "view", at(10, 9), toy)
        event(known, "add_to_cart", at(10, 11), toy)
        event(known, "purchase", at(10, 12), toy, value=9.0)
        link_identities(links=[("anon-1", "u1")], linked_at=at(10, 11))

    def test_the_funnel_follows_the_person_across_sign_in(self, signed_in_shopper):
        result = selectors.funnel(date_range=JANUARY,
                                  steps=["view", "add_to_cart", "purchase"], window_days=7)
        assert [step["users"] for step in result["steps"]] == [1, 1, 1]

    def test_overview_counts_one_active_and_new_user(self, signed_in_shopper):
        day_10 = selectors.overview(date_range=JANUARY)["days"][9]
        assert (day_10["active_users"], day_10["new_users"]) == (1, 1)
        assert selectors.overview(date_range=JANUARY, category="toys")["days"][9][
            "new_users"] == 1

    def test_items_count_one_viewer_and_purchaser(self, signed_in_shopper):
        toy = Item.objects.get(item_id="toy")
        event(EndUser.objects.get(user_id="u1"), "view", at(10, 11), toy)  # again, signed in

        row = selectors.item_performance(date_range=JANUARY)[0]
        category = selectors.category_performance(date_range=JANUARY)[0]

        assert (row["views"], row["viewers"], row["purchasers"]) == (2, 1, 1)
        assert (category["viewers"], category["purchasers"]) == (1, 1)

    def test_retention_has_one_cohort_member(self, signed_in_shopper):
        result = selectors.retention(date_range=JANUARY, period="day")
        assert [(row["cohort"], row["users"]) for row in result["cohorts"]] == [
            (date(2026, 1, 10), 1)]
