"""Item and category performance on a hand-built catalog."""

from datetime import date

import pytest

from analytics.insights import items
from analytics.insights.common import DateRange
from ingestion.models import EndUser
from tests.analytics.insights.builders import JANUARY, at, event, item, user


pytestmark = pytest.mark.django_db


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
        rows = items.item_performance(date_range=JANUARY)
        book = rows[0]
        assert (book["item_id"], book["views"], book["viewers"]) == ("book", 5, 4)
        assert (book["purchasers"], book["conversion"], book["revenue"]) == (2, 0.5, 20.0)
        assert book["average_rating"] == 3.0
        assert book["sentiment_shares"] == {"negative": 0.5, "neutral": 0.0, "positive": 0.5}
        assert rows[1]["item_id"] == "toy"
        assert rows[1]["conversion"] == 0.0
        by_revenue = items.item_performance(date_range=JANUARY, order_by="revenue", limit=1)
        assert [row["item_id"] for row in by_revenue] == ["book"]

    def test_category_performance(self, catalog):
        rows = {row["category"]: row for row in
                items.category_performance(date_range=JANUARY)}
        assert rows["books"]["revenue"] == 20.0
        assert rows["toys"]["views"] == 1

    def test_trending_against_previous_period(self, catalog):
        rows = items.trending_items(date_range=JANUARY, min_views=1)
        assert [(row["item_id"], row["current_views"], row["previous_views"], row["growth"])
                for row in rows] == [("book", 5, 1, 4.0), ("toy", 1, 0, None)]

    def test_category_users_are_distinct_across_its_items(self, catalog):
        book, _ = catalog
        novel = item("novel", "books")
        viewer = EndUser.objects.get(user_id="v0")
        event(viewer, "view", at(23), novel)
        event(viewer, "purchase", at(23), novel, value=5.0)
        rows = {row["category"]: row for row in
                items.category_performance(date_range=JANUARY)}
        books = rows["books"]
        assert (books["views"], books["viewers"]) == (6, 4)
        assert (books["purchases"], books["purchasers"], books["revenue"]) == (3, 2, 25.0)
        assert books["conversion"] == 0.5
        assert books["reviews"] == 2 and books["average_rating"] == 3.0
        # The previous period's views count for trending only.
        assert items.item_performance(date_range=JANUARY, category="books")[0]["views"] == 5

    def test_the_previous_periods_events_count_as_its_views_alone(self, catalog):
        book, _ = catalog
        # December: a purchase, a review and a view of a book in another category, and a
        # lamp seen only then (it fell from 2 views to none).
        lamp, atlas = item("lamp", "lights"), item("atlas", "maps")
        shopper = user("december")
        event(shopper, "purchase", at(11, month=12, year=2025), book, value=99.0)
        event(shopper, "review", at(11, month=12, year=2025), book, value=1,
              sentiment_label="negative", sentiment_score=0.1)
        event(shopper, "view", at(12, month=12, year=2025), atlas)
        for day in (12, 13):
            event(shopper, "view", at(day, month=12, year=2025), lamp)
        # Before the previous period: counted nowhere.
        event(shopper, "view", at(30, month=11, year=2025), book)

        report = items.item_report(date_range=JANUARY, min_views=0)
        top = {row["item_id"]: row for row in report["items"]}
        assert set(top) == {"book", "toy"}
        assert (top["book"]["purchases"], top["book"]["revenue"]) == (2, 20.0)
        assert (top["book"]["reviews"], top["book"]["average_rating"]) == (2, 3.0)
        assert {row["category"] for row in report["categories"]} == {"books", "toys"}
        assert [(row["item_id"], row["current_views"], row["previous_views"], row["growth"])
                for row in report["trending"]] == [
            ("book", 5, 1, 4.0), ("toy", 1, 0, None), ("atlas", 0, 1, -1.0),
            ("lamp", 0, 2, -1.0)]
        in_books = items.trending_items(date_range=JANUARY, category="books", min_views=0)
        assert [(row["item_id"], row["previous_views"]) for row in in_books] == [("book", 1)]

    def test_item_report_matches_the_three_selectors(self, catalog):
        report = items.item_report(date_range=JANUARY, order_by="conversion", limit=5,
                                       min_views=1)
        filters = {"date_range": JANUARY, "order_by": "conversion", "limit": 5}
        assert report["items"] == items.item_performance(**filters)
        assert report["categories"] == items.category_performance(**filters)
        assert report["trending"] == items.trending_items(date_range=JANUARY, min_views=1)
        assert [row["item_id"] for row in report["items"]] == ["book", "toy"]
        empty = items.item_report(date_range=DateRange(start=date(2025, 6, 1),
                                                           end=date(2025, 6, 2)))
        assert empty == {"items": [], "categories": [], "trending": []}

    def test_items_tied_on_the_ordering_keep_a_stable_order(self):
        for name in ["b", "a", "c"]:
            event(user(f"u{name}"), "view", at(20), item(name))
        first = [row["item_id"] for row in items.item_performance(date_range=JANUARY)]
        assert first == [row["item_id"] for row in items.item_performance(date_range=JANUARY)]
        assert sorted(first) == ["a", "b", "c"]

    def test_the_top_items_by_rating_put_unrated_items_last_whatever_their_views(self):
        unrated, low, high = item("unrated"), item("low"), item("high")
        for n in range(5):
            event(user(f"u{n}"), "view", at(20), unrated)
        event(user("r1"), "rating", at(21), low, value=2)
        event(user("r2"), "rating", at(21), high, value=4)
        event(user("r3"), "rating", at(21), high, value=5)

        def top(limit):
            return [row["item_id"] for row in items.item_performance(
                date_range=JANUARY, order_by="average_rating", limit=limit)]

        assert top(2) == ["high", "low"]
        assert top(3) == ["high", "low", "unrated"]

    def test_the_top_items_by_conversion_rank_every_item_then_cut_at_the_limit(self):
        # best: its one viewer bought; popular: 2 of 4 viewers bought, the share of half
        # (1 of 2) with more views; browsed: 3 viewers, none bought (ahead of half if the
        # shares were divided as integers). unseen (bought by people who never viewed it)
        # and rated (no view or purchase at all) have no conversion: last, by item.
        half, popular, best, browsed, unseen, rated = (
            item(name) for name in ["half", "popular", "best", "browsed", "unseen", "rated"])
        for n in range(2):
            event(user(f"h{n}"), "view", at(20), half)
        event(EndUser.objects.get(user_id="h0"), "purchase", at(21), half, value=1.0)
        for n in range(4):
            event(user(f"p{n}"), "view", at(20), popular)
        for n in range(2):
            event(EndUser.objects.get(user_id=f"p{n}"), "purchase", at(21), popular, value=1.0)
        event(user("b0"), "view", at(20), best)
        event(EndUser.objects.get(user_id="b0"), "purchase", at(21), best, value=1.0)
        for n in range(3):
            event(user(f"w{n}"), "view", at(20), browsed)
        for n in range(3):
            event(user(f"u{n}"), "purchase", at(21), unseen, value=9.0)
        event(user("r0"), "rating", at(21), rated, value=4)

        def top(limit):
            return [(row["item_id"], row["conversion"]) for row in items.item_performance(
                date_range=JANUARY, order_by="conversion", limit=limit)]

        ranked = [("best", 1.0), ("popular", 0.5), ("half", 0.5), ("browsed", 0.0),
                  ("unseen", None), ("rated", None)]
        for limit in range(1, 7):
            assert top(limit) == ranked[:limit]

    def test_trending_ties_at_the_limit_go_by_the_item_ids_characters(self):
        # Character by character "B" < "a" and "sku-2" < "sku10"; a database collation
        # that ignores case or punctuation would keep "a" and "sku10".
        for name in ["sku10", "a", "sku-2", "B"]:
            event(user(f"u{name}"), "view", at(20), item(name))
        rows = items.trending_items(date_range=JANUARY, min_views=1, limit=2)
        assert [row["item_id"] for row in rows] == ["B", "a"]
        rows = items.trending_items(date_range=JANUARY, min_views=1, limit=3)
        assert [row["item_id"] for row in rows] == ["B", "a", "sku-2"]

    def test_no_trending_items_asked_for_is_an_empty_list(self):
        event(user("u"), "view", at(20), item("a"))
        assert items.trending_items(date_range=JANUARY, limit=0) == []

    def test_trending_ties_at_the_limit_go_by_item_id(self):
        # Created in reverse order so database ids disagree with the external ids.
        for name in ["d", "c", "b", "a"]:
            event(user(f"u{name}"), "view", at(20), item(name))
        rows = items.trending_items(date_range=JANUARY, min_views=1, limit=2)
        assert [row["item_id"] for row in rows] == ["a", "b"]
