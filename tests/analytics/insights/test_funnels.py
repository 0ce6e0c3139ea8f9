"""Funnels on a hand-built event set."""

import pytest

from analytics.insights import funnels
from tests.analytics.insights.builders import JANUARY, at, event, item, user


pytestmark = pytest.mark.django_db


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
        result = funnels.funnel(date_range=JANUARY,
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

    def test_steps_of_other_types_at_the_same_moment_follow_the_previous_one(self):
        # Imported with second precision: the cart and the purchase share a time.
        book = item("book", "books")
        buyer, viewer = user("buyer"), user("viewer")
        for kind in ("view", "add_to_cart", "purchase"):
            event(buyer, kind, at(2, 10), book)
        event(viewer, "view", at(3, 10), book)

        same_type = funnels.funnel(date_range=JANUARY, steps=["view", "view"], window_days=7)
        result = funnels.funnel(date_range=JANUARY,
                                steps=["view", "add_to_cart", "purchase"], window_days=7)

        assert [step["users"] for step in result["steps"]] == [2, 1, 1]
        # A view is no second view of itself.
        assert [step["users"] for step in same_type["steps"]] == [2, 0]
        # Nor a later step after the cart at its moment: the buyer viewed once.
        again = funnels.funnel(date_range=JANUARY, steps=["view", "add_to_cart", "view"],
                               window_days=7)
        assert [step["users"] for step in again["steps"]] == [2, 1, 0]

    def test_longer_window_lets_late_steps_in(self, shop):
        result = funnels.funnel(date_range=JANUARY,
                                  steps=["view", "add_to_cart", "purchase"], window_days=14)
        assert [step["users"] for step in result["steps"]] == [6, 5, 2]

    def test_breakdown_keeps_every_step_in_one_category(self, shop):
        result = funnels.funnel(date_range=JANUARY,
                                  steps=["view", "add_to_cart", "purchase"], window_days=7)
        breakdown = {row["category"]: [step["users"] for step in row["steps"]]
                     for row in result["breakdown"]}
        assert breakdown == {"toys": [4, 2, 0], "books": [2, 1, 1]}
        medians = {row["category"]: [step["median_seconds_from_previous"] for step in row["steps"]]
                   for row in result["breakdown"]}
        # Toys: carts 1h and 2h after the view; books: 1h, then 23h to the purchase.
        assert medians == {"toys": [None, 5400, None], "books": [None, 3600, 23 * 3600]}

    def test_a_breakdown_limited_to_its_largest_categories_counts_them_as_in_full(self):
        # Beta and alpha tie; names go in code point order (upper case first), whatever
        # the database's collation.
        for name, users in (("toys", 3), ("alpha", 1), ("Beta", 1), ("cups", 2)):
            thing = item(f"{name}-item", name)
            for n in range(users):
                shopper = user(f"{name}-{n}")
                event(shopper, "view", at(2, 10), thing)
                if n == 0:
                    event(shopper, "add_to_cart", at(2, 11), thing)

        def breakdown(limit):
            result = funnels.funnel(date_range=JANUARY, steps=["view", "add_to_cart"],
                                    breakdown_limit=limit)
            return [(row["category"], [step["users"] for step in row["steps"]])
                    for row in result["breakdown"]]

        assert breakdown(3) == breakdown(10)[:3] == [
            ("toys", [3, 1]), ("cups", [2, 1]), ("Beta", [1, 1])]

    def test_category_filter(self, shop):
        result = funnels.funnel(date_range=JANUARY, steps=["view", "add_to_cart"],
                                  window_days=7, category="books")
        assert [step["users"] for step in result["steps"]] == [2, 1]

    def test_no_events(self):
        result = funnels.funnel(date_range=JANUARY, steps=["view", "purchase"])
        assert [step["users"] for step in result["steps"]] == [0, 0]
        assert result["steps"][1]["conversion"] is None
        assert result["breakdown"] == []
