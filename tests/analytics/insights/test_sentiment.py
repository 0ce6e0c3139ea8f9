"""Review sentiment aggregates on hand-built reviews."""

from datetime import date

import pytest

from analytics.insights import sentiment
from tests.analytics.insights.builders import JANUARY, at, event, item, user


pytestmark = pytest.mark.django_db


class TestSentiment:
    @pytest.fixture
    def reviews(self):
        grim, fine = item("grim", "books"), item("fine")
        people = [user(f"r{n}") for n in range(4)]
        for who, score in zip(people[:3], (0.05, 0.2, 0.1), strict=True):
            event(who, "review", at(3), grim, value=1, text=f"bad {score}",
                  sentiment_label="negative", sentiment_score=score,
                  properties={"review_title": "Fell apart"} if score == 0.05 else {})
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
                 sentiment.sentiment_trend(date_range=JANUARY)}
        assert trend[date(2026, 1, 3)]["shares"]["negative"] == 1.0
        assert trend[date(2026, 1, 4)]["reviews"] == 3
        assert trend[date(2026, 1, 4)]["shares"]["positive"] == pytest.approx(2 / 3)
        assert trend[date(2026, 1, 5)]["shares"]["positive"] is None

    def test_by_item_and_category(self, reviews):
        worst = sentiment.sentiment_by_item(date_range=JANUARY, order="negative_share")
        assert [(row["item_id"], row["reviews"], row["negative_share"]) for row in worst] == [
            ("grim", 4, 0.75), ("fine", 2, 0.0)]
        only_fine = sentiment.sentiment_by_item(date_range=JANUARY, item_ids=["fine"])
        assert only_fine[0]["sentiment_shares"] == {"negative": 0.0, "neutral": 0.5,
                                                    "positive": 0.5}
        assert sentiment.sentiment_by_item(date_range=JANUARY, item_ids=[]) == []
        categories = {row["category"]: row for row in
                      sentiment.sentiment_by_category(date_range=JANUARY)}
        assert categories["books"]["negative"] == 3
        assert categories["toys"]["sentiment_shares"]["neutral"] == 0.5

    def test_worst_reviews_per_item(self, reviews):
        worst = sentiment.negative_reviews_by_item(item_ids=["grim", "fine"], per_item=2)
        assert [(review["headline"], review["text"]) for review in worst["grim"]] == [
            ("Fell apart", "bad 0.05"), (None, "bad 0.1")]
        assert worst["fine"] == []

    def test_category_filter(self, reviews):
        trend = {row["date"]: row for row in
                 sentiment.sentiment_trend(date_range=JANUARY, category="books")}
        assert trend[date(2026, 1, 4)]["reviews"] == 1  # grim's "ok"; fine is in toys
        assert trend[date(2026, 1, 4)]["shares"]["positive"] == 1.0
        summary = sentiment.sentiment_summary(date_range=JANUARY, category="toys",
                                              min_reviews=1)
        assert (summary["reviews"], summary["shares"]["neutral"]) == (2, 0.5)
        assert [row["item_id"] for row in summary["most_negative_items"]] == ["fine"]

    def test_summary(self, reviews):
        summary = sentiment.sentiment_summary(date_range=JANUARY, min_reviews=2)
        assert summary["reviews"] == 6
        assert summary["shares"]["negative"] == 0.5
        top = summary["most_negative_items"][0]
        assert top["item_id"] == "grim"
        assert len(top["worst_reviews"]) == 3
