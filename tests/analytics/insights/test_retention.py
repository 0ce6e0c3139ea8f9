"""Retention cohorts on a hand-built event set."""

from datetime import date, datetime, time, timedelta

import pytest
from django.utils import timezone

from analytics.insights import retention
from analytics.insights.common import DateRange
from ingestion.models import EndUser
from tests.analytics.insights.builders import at, event, item, user


pytestmark = pytest.mark.django_db


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

        result = retention.retention(date_range=three_weeks, period="week")

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

        result = retention.retention(date_range=two_days, period="day")

        assert result["cohorts"][0]["retention"] == [1.0, 0.5]

    def test_weeks_that_have_not_begun_are_left_out_not_shown_as_nobody_back(self):
        today = timezone.localdate()
        monday = today - timedelta(days=today.weekday())
        newcomer = user("newcomer", first_seen=datetime.combine(
            monday - timedelta(days=7), time(12), tzinfo=timezone.get_current_timezone()))
        event(newcomer, "view", newcomer.first_seen)

        result = retention.retention(
            date_range=DateRange(start=monday - timedelta(days=7), end=today + timedelta(days=60)),
            period="week")

        # Last week's cohort, seen last week and this week so far: nothing after.
        assert result["periods"] == 2
        assert result["cohorts"][0]["active"] == [1, 0]

    def test_a_cohort_first_seen_ahead_of_today_keeps_its_own_period(self):
        # A fast clock: the first event is stamped tomorrow (accepted up to a day ahead).
        tomorrow = timezone.localdate() + timedelta(days=1)
        early = user("early", first_seen=datetime.combine(
            tomorrow, time(1), tzinfo=timezone.get_current_timezone()))
        event(early, "view", early.first_seen)

        result = retention.retention(date_range=DateRange(start=tomorrow, end=tomorrow),
                                     period="day")

        assert [(row["users"], row["active"]) for row in result["cohorts"]] == [(1, [1])]

    def test_category_filter_counts_only_users_active_in_it(self):
        one_week = DateRange(start=date(2026, 1, 5), end=date(2026, 1, 18))
        book, toy = item("book", "books"), item("toy")
        reader = user("reader", first_seen=at(5))
        event(reader, "view", at(5), book)
        event(reader, "view", at(12), toy)  # back in week 2, but not for books
        player = user("player", first_seen=at(6))
        event(player, "view", at(6), toy)

        result = retention.retention(date_range=one_week, period="week", category="books")

        assert [(row["cohort"], row["users"], row["active"]) for row in result["cohorts"]] == [
            (date(2026, 1, 5), 1, [1, 0])]
