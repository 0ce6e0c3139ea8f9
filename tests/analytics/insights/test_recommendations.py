"""Recommendation performance and the A/B comparison on hand-built impressions."""

import math

import pytest

from analytics.insights import recommendations
from ingestion.models import EndUser, Event
from recommender.models import Impression, ModelVersion
from tests.analytics.insights.builders import JANUARY, at, event, impressions, item, user


pytestmark = pytest.mark.django_db


def agresti_caffo(hits_a: int, total_a: int, hits_b: int, total_b: int) -> tuple[float, float]:
    """The 95% interval of rate A - rate B with a hit and a miss added to each arm."""
    rate_a, rate_b = (hits_a + 1) / (total_a + 2), (hits_b + 1) / (total_b + 2)
    margin = 1.959964 * math.sqrt(rate_a * (1 - rate_a) / (total_a + 2)
                                  + rate_b * (1 - rate_b) / (total_b + 2))
    return max(rate_a - rate_b - margin, -1.0), min(rate_a - rate_b + margin, 1.0)


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
        result = recommendations.recommendation_performance(date_range=JANUARY)

        versions = {row["model_version"]: row for row in result["by_model_version"]}
        assert (versions["v1"]["impressions"], versions["v1"]["clicks"]) == (100, 30)
        assert (versions["v1"]["purchases"], versions["v1"]["revenue"]) == (1, 40.0)
        assert versions["v2"]["ctr"] == 0.2
        assert versions[None]["clicks"] == 0
        strategies = {row["strategy"]: row for row in result["by_strategy"]}
        assert strategies["two_tower"]["impressions"] == 180
        assert strategies["popular"]["impressions"] == 20
        assert (result["impressions"], result["clicks"], result["purchases"]) == (200, 46, 1)

    def test_outcomes_count_for_the_impressions_in_the_range_whatever_their_version(self):
        book = item("book", "books")
        shopper = user("shopper")
        [unversioned] = impressions(None, "popular", 1)
        december = Impression.objects.create(user_id="someone", item_ids=["book"], strategy="popular",
                                             created_at=at(20, month=12, year=2025))
        Event.objects.bulk_create(
            Event(user=shopper, item=book, type=kind, timestamp=at(11), received_at=at(11),
                  rec_id=shown.rec_id, value=12.5 if kind == "purchase" else None)
            for shown in (unversioned, december) for kind in ("click", "purchase"))

        result = recommendations.recommendation_performance(date_range=JANUARY)

        # December's impression is outside the range, so its January click and purchase
        # are too.
        assert [(row["strategy"], row["impressions"], row["clicks"], row["purchases"], row["revenue"])
                for row in result["by_strategy"]] == [("popular", 1, 1, 1, 12.5)]
        assert result["by_model_version"][0]["model_version"] is None
        assert result["by_model_version"][0]["clicks"] == 1

    def test_ctr_and_purchase_rate_differences_have_confidence_intervals(self, traffic):
        comparison = recommendations.recommendation_performance(
            date_range=JANUARY)["comparison"]

        assert (comparison["version_a"], comparison["version_b"]) == ("v1", "v2")
        low, high = agresti_caffo(30, 100, 16, 80)
        assert comparison["difference"] == pytest.approx(0.1)
        assert (comparison["ci_low"], comparison["ci_high"]) == (pytest.approx(low),
                                                                 pytest.approx(high))
        assert comparison["significant"] is False
        # Purchase rate: 1 of 100 (v1) against 0 of 80 (v2).
        purchases = comparison["purchase_rate_difference"]
        assert (comparison["purchase_rate_a"], comparison["purchase_rate_b"]) == (0.01, 0.0)
        low, high = agresti_caffo(1, 100, 0, 80)
        assert purchases["difference"] == pytest.approx(0.01)
        assert (purchases["ci_low"], purchases["ci_high"]) == (pytest.approx(low),
                                                               pytest.approx(high))
        assert purchases["significant"] is False

    def test_versions_are_compared_on_personalised_answers_alone(self, traffic):
        v1, v2 = traffic
        # Similar items are the active version's for every visitor, whatever their bucket:
        # 200 of them, none clicked, would halve v1's CTR in the comparison.
        Impression.objects.bulk_create(
            Impression(user_id="someone", item_ids=["book"], model_version=v1,
                       strategy="two_tower", endpoint="similar", created_at=at(10))
            for _ in range(200))

        result = recommendations.recommendation_performance(date_range=JANUARY)

        assert result["comparison"]["ctr_a"] == 0.3
        versions = {row["model_version"]: row for row in result["by_model_version"]}
        assert versions["v1"]["impressions"] == 300  # every impression still listed

    def test_explicit_comparison_order(self, traffic):
        comparison = recommendations.recommendation_performance(
            date_range=JANUARY, compare=("v2", "v1"))["comparison"]
        assert comparison["difference"] == pytest.approx(-0.1)

    def test_category_filter_keeps_only_outcomes_on_its_items(self, traffic):
        toy = item("toy")
        shown = Impression.objects.filter(model_version__name="v2").first()
        event(EndUser.objects.get(user_id="shopper"), "purchase", at(12), toy,
              rec_id=shown.rec_id, value=15.0)

        books = recommendations.recommendation_performance(date_range=JANUARY, category="books")
        toys = recommendations.recommendation_performance(date_range=JANUARY, category="toys")

        assert (books["clicks"], books["purchases"], books["revenue"]) == (46, 1, 40.0)
        assert (toys["clicks"], toys["purchases"], toys["revenue"]) == (0, 1, 15.0)

    def test_significant_difference(self):
        result = recommendations.proportion_difference(hits_a=500, total_a=1000, hits_b=400,
                                                 total_b=1000)
        assert result["significant"] is True
        assert result["ci_low"] == pytest.approx(agresti_caffo(500, 1000, 400, 1000)[0])

    def test_a_small_arm_without_clicks_is_not_called_worse(self):
        # The plain interval had no width for an arm without hits: "significant".
        result = recommendations.proportion_difference(hits_a=0, total_a=20, hits_b=30,
                                                       total_b=1000)
        assert result["ci_low"] < 0 < result["ci_high"]
        assert result["significant"] is False

    def test_no_impressions(self):
        result = recommendations.recommendation_performance(date_range=JANUARY)
        assert result["impressions"] == 0
        assert result["ctr"] is None
        assert result["comparison"] is None
