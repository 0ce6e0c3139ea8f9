"""Stickiness on hand-built activity."""

from datetime import date

import pytest

from analytics.insights import stickiness
from analytics.insights.common import DateRange
from tests.analytics.insights.builders import at, event, user


pytestmark = pytest.mark.django_db


def test_persons_by_active_days_per_week():
    ann, bob = user("ann"), user("bob")
    event(ann, "view", at(5, 9))
    event(ann, "view", at(6, 9))
    event(ann, "purchase", at(6, 18))   # same day again: still two days that week
    event(bob, "view", at(7))
    event(ann, "view", at(14))          # a second week for ann: one day

    result = stickiness.stickiness(date_range=DateRange(start=date(2026, 1, 5),
                                                        end=date(2026, 1, 18)))

    assert result["person_periods"] == 3
    assert [(row["days"], row["persons"]) for row in result["days"][:3]] == [(1, 2), (2, 1), (3, 0)]
    assert len(result["days"]) == 7
    assert result["days"][0]["share"] == pytest.approx(2 / 3)


def test_months_count_up_to_31_days_and_no_activity_is_no_share():
    result = stickiness.stickiness(date_range=DateRange(start=date(2026, 1, 1), end=date(2026, 1, 31)),
                                   interval="month")

    assert len(result["days"]) == 31 and result["person_periods"] == 0
    assert result["days"][0]["share"] is None
