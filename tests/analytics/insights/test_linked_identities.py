"""Every insight counts a person once across an anonymous id and a sign-in."""

from datetime import date

import pytest

from analytics.insights import funnels, items, overview, retention
from ingestion.models import EndUser, Item
from tests.analytics.insights.builders import JANUARY, at, event, item, user


pytestmark = pytest.mark.django_db


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
        result = funnels.funnel(date_range=JANUARY,
                                  steps=["view", "add_to_cart", "purchase"], window_days=7)
        assert [step["users"] for step in result["steps"]] == [1, 1, 1]

    def test_overview_counts_one_active_and_new_user(self, signed_in_shopper):
        day_10 = overview.overview(date_range=JANUARY)["days"][9]
        assert (day_10["active_users"], day_10["new_users"]) == (1, 1)
        assert overview.overview(date_range=JANUARY, category="toys")["days"][9][
            "new_users"] == 1

    def test_items_count_one_viewer_and_purchaser(self, signed_in_shopper):
        toy = Item.objects.get(item_id="toy")
        event(EndUser.objects.get(user_id="u1"), "view", at(10, 11), toy)  # again, signed in

        row = items.item_performance(date_range=JANUARY)[0]
        category = items.category_performance(date_range=JANUARY)[0]

        assert (row["views"], row["viewers"], row["purchasers"]) == (2, 1, 1)
        assert (category["viewers"], category["purchasers"]) == (1, 1)

    def test_retention_has_one_cohort_member(self, signed_in_shopper):
        result = retention.retention(date_range=JANUARY, period="day")
        assert [(row["cohort"], row["users"]) for row in result["cohorts"]] == [
            (date(2026, 1, 10), 1)]
