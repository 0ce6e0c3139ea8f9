"""Lifecycle on hand-built activity with a user who comes back after a dormant week."""

from datetime import date

import pytest

from analytics.insights import lifecycle
from analytics.insights.common import DateRange
from tests.analytics.insights.builders import at, event, user


pytestmark = pytest.mark.django_db

THREE_WEEKS = DateRange(start=date(2026, 1, 5), end=date(2026, 1, 25))  # Mondays 5, 12, 19


def test_new_returning_resurrecting_and_dormant_per_week():
    ann, bob = user("ann", first_seen=at(5)), user("bob", first_seen=at(6))
    cara = user("cara", first_seen=at(20))
    event(ann, "view", at(5))
    event(bob, "view", at(6))
    event(ann, "view", at(13))          # returning in week 2; bob dormant
    event(bob, "purchase", at(21))      # bob resurrects in week 3; ann dormant
    event(cara, "view", at(20))

    result = lifecycle.lifecycle(date_range=THREE_WEEKS, interval="week")

    assert result["periods"] == [
        {"period": "2026-01-05", "new": 2, "returning": 0, "resurrecting": 0, "dormant": 0},
        {"period": "2026-01-12", "new": 0, "returning": 1, "resurrecting": 0, "dormant": -1},
        {"period": "2026-01-19", "new": 1, "returning": 0, "resurrecting": 1, "dormant": -1},
    ]


def test_activity_before_the_range_makes_a_user_returning_not_new():
    old_hand = user("old", first_seen=at(1, month=12, year=2025))
    event(old_hand, "view", at(2))   # the week before the range (Monday 29 Dec)
    event(old_hand, "view", at(6))

    first_week = lifecycle.lifecycle(date_range=DateRange(start=date(2026, 1, 5),
                                                          end=date(2026, 1, 11)))["periods"][0]

    assert (first_week["new"], first_week["returning"]) == (0, 1)


def test_daily_and_monthly_periods():
    ann = user("ann", first_seen=at(5))
    event(ann, "view", at(5))
    event(ann, "view", at(7))

    daily = lifecycle.lifecycle(date_range=DateRange(start=date(2026, 1, 5), end=date(2026, 1, 7)),
                                interval="day")["periods"]
    monthly = lifecycle.lifecycle(date_range=DateRange(start=date(2026, 1, 1), end=date(2026, 2, 28)),
                                  interval="month")["periods"]

    assert [(p["new"], p["returning"], p["resurrecting"], p["dormant"]) for p in daily] == [
        (1, 0, 0, 0), (0, 0, 0, -1), (0, 0, 1, 0)]
    assert [(p["period"], p["new"], p["dormant"]) for p in monthly] == [
        ("2026-01-01", 1, 0), ("2026-02-01", 0, -1)]


def test_with_a_category_new_means_first_seen_and_active_in_it_that_period():
    from tests.analytics.insights.builders import item

    shoes, hats = item("sneaker", "shoes"), item("beanie", "hats")
    ann = user("ann", first_seen=at(5))
    bob = user("bob", first_seen=at(6))
    event(ann, "view", at(5), shoes)
    event(bob, "view", at(6), hats)      # new to the shop, but not in shoes this week
    event(bob, "view", at(13), shoes)    # first time in shoes: resurrecting there, not new

    weeks = lifecycle.lifecycle(date_range=DateRange(start=date(2026, 1, 5), end=date(2026, 1, 18)),
                                category="shoes")["periods"]

    assert [(p["new"], p["returning"], p["resurrecting"], p["dormant"]) for p in weeks] == [
        (1, 0, 0, 0), (0, 0, 1, -1)]


def test_a_linked_anonymous_id_is_not_a_new_person_of_its_own():
    from ingestion.services import link_identities

    anonymous, known = user("anon-1", first_seen=at(5)), user("u1", first_seen=at(5))
    event(anonymous, "view", at(5))
    event(known, "view", at(6))
    link_identities(links=[("anon-1", "u1")], linked_at=at(6))

    week = lifecycle.lifecycle(date_range=DateRange(start=date(2026, 1, 5),
                                                    end=date(2026, 1, 11)))["periods"][0]

    assert (week["new"], week["resurrecting"]) == (1, 0)
