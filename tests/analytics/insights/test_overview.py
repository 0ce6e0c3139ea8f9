"""The overview on a hand-built event set."""

from datetime import date

import pytest

from analytics.insights import overview
from analytics.insights.common import DateRange
from tests.analytics.insights.builders import JANUARY, at, event, item, user


pytestmark = pytest.mark.django_db


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

        result = overview.overview(date_range=JANUARY)

        day_30 = result["days"][29]
        assert day_30["active_users"] == 2
        assert (day_30["new_users"], day_30["returning_users"]) == (1, 1)
        assert day_30["events_by_type"] == {"view": 2, "purchase": 2}
        assert (day_30["purchases"], day_30["revenue"]) == (2, 25.5)
        assert result["days"][0]["active_users"] == 0
        assert (result["dau"], result["wau"], result["mau"]) == (1, 2, 2)
        assert result["revenue"] == 25.5
        # MAU's 30 days (2-31 January): one person on the 20th and 31st, two on the 30th.
        assert result["stickiness"] == pytest.approx((1 + 2 + 1) / 30 / 2)

    def test_stickiness_over_a_long_range_compares_the_last_30_days_with_mau(self):
        book = item("book")
        regulars = [user(f"regular{n}", first_seen=at(1)) for n in range(10)]
        for day in range(1, 32):
            for regular in regulars:
                event(regular, "view", at(day), book)
        late = user("late", first_seen=at(30, month=3))
        event(late, "view", at(31, month=3), book)

        result = overview.overview(date_range=DateRange(start=date(2026, 1, 1),
                                                        end=date(2026, 3, 31)))

        assert result["mau"] == 1
        assert result["stickiness"] == pytest.approx(1 / 30)

    def test_category_filter_keeps_only_its_items(self):
        book = item("book", "books")
        toy = item("toy")
        reader = user("reader", first_seen=at(2))
        event(reader, "purchase", at(2), book, value=10.0)
        event(reader, "purchase", at(2), toy, value=99.0)

        result = overview.overview(date_range=JANUARY, category="books")

        assert result["revenue"] == 10.0
        assert result["events_by_type"] == {"purchase": 1}
