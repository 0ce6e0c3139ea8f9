import os
import shutil
import uuid
from datetime import UTC, date, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from ingestion.demo import generate_demo_shop, window_end
from ingestion.models import EndUser, Event, Item
from recommender.models import Impression
from tests.factories import EventFactory

DATA = Path(__file__).parent / "data"
SMALL_SHOP = {"users": 40, "items": 24, "days": 21}
SMALL_SHOP_OPTIONS = ["--users", "40", "--items", "24", "--days", "21"]


def run(command: str, *args: str) -> tuple[str, list[str]]:
    """Runs a command; returns its summary line and its stderr lines."""
    stdout, stderr = StringIO(), StringIO()
    call_command(command, *args, stdout=stdout, stderr=stderr)
    return stdout.getvalue().strip(), stderr.getvalue().splitlines()


def stored_events() -> set[tuple]:
    return set(Event.objects.values_list("event_id", "type", "user__user_id", "item__item_id",
                                         "timestamp", "value"))


@pytest.mark.django_db
class TestImportEvents:
    def test_jsonl_stores_good_rows_and_reports_bad_ones_by_line(self):
        summary, errors = run("import_events", str(DATA / "events.jsonl"))
        assert summary == "imported 3, duplicates 0, rejected 3"
        assert errors[0] == "line 4: value: A rating must be from 0.5 to 5."
        assert errors[1].startswith("line 5: event: Is not valid JSON")
        assert errors[2] == "line 7: item_id: This field is required."
        purchase = Event.objects.get(type="purchase")
        assert (purchase.value, purchase.properties) == (19.5, {"coupon": "WINTER"})
        assert purchase.timestamp == datetime(2026, 1, 31, 12, 5, tzinfo=UTC)
        assert Event.objects.filter(
            event_id=uuid.UUID("6f1c2d3e-0000-4000-8000-000000000001")).exists()
        assert Event.objects.get(type="signup").item is None

    def test_csv_reads_quoted_multiline_text_and_json_properties(self):
        summary, errors = run("import_events", str(DATA / "events.csv"))
        assert summary == "imported 4, duplicates 0, rejected 2"
        assert errors[0].startswith("line 6: properties: Is not valid JSON")
        assert errors[1] == "line 8: row: Has 5 columns; the header has 9."
        assert Event.objects.get(type="review").text == "Fell apart\nafter a week"
        assert Event.objects.get(type="purchase").properties == {"coupon": "WINTER"}

    @pytest.mark.parametrize("name", ["events.jsonl", "events.csv"])
    def test_rerun_stores_nothing_new(self, name):
        run("import_events", str(DATA / name))
        before = stored_events()
        summary, _ = run("import_events", str(DATA / name))
        assert summary.startswith(f"imported 0, duplicates {len(before)},")
        assert stored_events() == before

    def test_csv_with_an_unknown_column_is_refused_before_storing(self, tmp_path):
        bad = tmp_path / "events.csv"
        bad.write_text("type,user_id,colour\nview,u1,red\n")
        with pytest.raises(CommandError, match="Unknown column 'colour'"):
            run("import_events", str(bad))
        assert not Event.objects.exists()

    def test_missing_file_is_a_command_error(self, tmp_path):
        with pytest.raises(CommandError, match="no such file"):
            run("import_events", str(tmp_path / "nope.jsonl"))

    def test_a_cell_longer_than_pythons_csv_allows_is_that_rows_reject(self, tmp_path):
        source = tmp_path / "events.csv"
        source.write_text("type,user_id,item_id,timestamp,text\n"
                          f"review,u1,sku-1,2026-01-31T12:00:00Z,{'x' * 200_000}\n"
                          "view,u1,sku-1,2026-01-31T12:00:00Z,\n")

        summary, errors = run("import_events", str(source))

        assert summary == "imported 1, duplicates 0, rejected 1"
        assert errors == ["line 2: text: Must be at most 5000 characters."]


@pytest.mark.django_db
class TestImportMovieLens:
    def test_u_data_rows_become_ratings_at_their_original_time(self):
        summary, errors = run("import_movielens", str(DATA / "u.data"))
        assert summary == "imported 3, duplicates 0, rejected 3"
        assert errors == ["line 3: value: A rating must be from 0.5 to 5.",
                          "line 6: timestamp: Must be a unix time in seconds.",
                          "line 7: row: Has 3 fields; expected 4."]
        rating = Event.objects.get(user__user_id="196")
        assert (rating.type, rating.item.item_id, rating.value) == ("rating", "242", 3.0)
        assert rating.timestamp == datetime(1997, 12, 4, 15, 55, 49, tzinfo=UTC)

    def test_recbole_inter_is_detected_and_names_the_same_events_as_u_data(self):
        run("import_movielens", str(DATA / "u.data"))
        summary, errors = run("import_movielens", str(DATA / "ml-100k.inter"))
        # 880606923.0 in the .inter file is the same instant as 880606923 in u.data.
        assert summary == "imported 0, duplicates 3, rejected 1"
        assert errors == ["line 4: value: A rating must be from 0.5 to 5."]

    def test_ratings_csv_is_detected_with_its_half_stars(self):
        summary, errors = run("import_movielens", str(DATA / "ratings.csv"))
        assert summary == "imported 4, duplicates 0, rejected 0"
        assert errors == []
        assert sorted(Event.objects.values_list("item__item_id", "value")) == [
            ("1", 4.0), ("3", 4.0), ("47", 5.0), ("6", 0.5)]

    def test_rerun_stores_nothing_new(self):
        run("import_movielens", str(DATA / "u.data"))
        before = stored_events()
        summary, _ = run("import_movielens", "--batch-size", "1", str(DATA / "u.data"))
        assert summary == "imported 0, duplicates 3, rejected 3"
        assert stored_events() == before

    def test_unknown_format_is_a_command_error(self, tmp_path):
        other = tmp_path / "other.txt"
        other.write_text("a;b;c\n")
        with pytest.raises(CommandError, match="Not a MovieLens"):
            run("import_movielens", str(other))


@pytest.mark.django_db
class TestImportReviews:
    def test_reviews_are_stored_with_synthetic_authors_and_catalog_updates(self):
        summary, errors = run("import_reviews", str(DATA / "reviews.csv"))
        assert summary == "imported 3, duplicates 0, rejected 2"
        assert errors == ["line 5: value: A rating must be from 0.5 to 5.",
                          "line 7: item_id: This field is required."]
        kettle = Item.objects.get(item_id="B001")
        assert (kettle.title, kettle.category) == ("Nordic Kettle", "Kitchen")
        assert Item.objects.get(item_id="B002").title == "Linen Throw"
        broken_lid = Event.objects.get(value=2)
        assert broken_lid.user.user_id == "review-author-r2"
        assert broken_lid.text == "The lid broke\nafter two weeks."
        assert broken_lid.timestamp == datetime(2026, 1, 10, 9, tzinfo=UTC)
        assert Event.objects.get(user__user_id="alice").type == "review"

    def test_imported_labels_outrank_ratings_in_sentiment_training_data(self, tmp_path):
        from recommender.selectors import labelled_review_frame

        reviews = tmp_path / "labelled.csv"
        reviews.write_text("item_id,rating,text,label\n"
                           "L1,5,Arrived broken,negative\nL1,,Does the job,neutral\n"
                           "L1,5,Lovely,\n")
        summary, errors = run("import_reviews", str(reviews))
        assert summary == "imported 3, duplicates 0, rejected 0" and errors == []

        frame = labelled_review_frame()
        assert dict(zip(frame["text"], frame["label"], strict=True)) == {
            "Arrived broken": "negative", "Does the job": "neutral", "Lovely": 5}

    def test_a_headline_column_named_title_heads_the_review_and_leaves_the_item(self, tmp_path):
        from recommender.selectors import labelled_review_frame

        reviews = tmp_path / "clothing.csv"
        reviews.write_text("item_id,rating,title,text\n"
                           "D1,2,Runs small,Returned it.\nD1,5,,Wearing it daily.\n")
        Item.objects.create(item_id="D1", title="Wrap dress")
        summary, errors = run("import_reviews", str(reviews), "--headline-column", "title")
        assert summary == "imported 2, duplicates 0, rejected 0" and errors == []

        assert Item.objects.get(item_id="D1").title == "Wrap dress"
        assert labelled_review_frame()["text"].tolist() == ["Runs small. Returned it.",
                                                            "Wearing it daily."]

    def test_a_missing_headline_column_is_a_command_error(self, tmp_path):
        reviews = tmp_path / "reviews.csv"
        reviews.write_text("item_id,rating,text\nB001,5,Nice\n")
        with pytest.raises(CommandError, match="No column 'headline'"):
            run("import_reviews", str(reviews), "--headline-column", "headline")

    def test_review_without_timestamp_is_dated_at_the_file_time(self, tmp_path):
        reviews = tmp_path / "reviews.csv"
        shutil.copy(DATA / "reviews.csv", reviews)
        file_time = datetime(2026, 2, 1, 10, 30, tzinfo=UTC)
        os.utime(reviews, (file_time.timestamp(), file_time.timestamp()))
        run("import_reviews", str(reviews))
        undated = Event.objects.get(text="Soft and warm.")
        assert undated.timestamp == file_time
        assert undated.user.user_id.startswith("review-author-")

    def test_rerun_stores_nothing_new_even_after_the_file_is_touched(self, tmp_path):
        reviews = tmp_path / "reviews.csv"
        shutil.copy(DATA / "reviews.csv", reviews)
        run("import_reviews", str(reviews))
        before = stored_events()
        os.utime(reviews)
        summary, _ = run("import_reviews", str(reviews))
        assert summary == "imported 0, duplicates 3, rejected 2"
        assert stored_events() == before
        assert EndUser.objects.filter(user_id__startswith="review-author-").count() == 2

    def test_missing_required_column_is_a_command_error(self, tmp_path):
        bad = tmp_path / "reviews.csv"
        bad.write_text("item_id,text\nB001,Nice\n")
        with pytest.raises(CommandError, match="Missing column 'rating'"):
            run("import_reviews", str(bad))


@pytest.mark.django_db
class TestSeedDemo:
    def test_stores_exactly_what_the_generator_makes_for_that_seed_and_date(self):
        summary, _ = run("seed_demo", *SMALL_SHOP_OPTIONS, "--end-date", "2026-03-01")
        shop = generate_demo_shop(**SMALL_SHOP, seed=7, end=window_end(date(2026, 3, 1)))
        expected = {(e.event_id, e.type, e.user_id, e.item_id, e.timestamp, e.value)
                    for e in shop.events}
        assert stored_events() == expected
        assert f"{len(expected):,} events" in summary
        assert Item.objects.filter(category="").count() == 0
        assert EndUser.objects.exclude(traits={}).exists()
        assert set(Impression.objects.values_list("rec_id", "model_version__name")) == {
            (shown.rec_id, shown.model_version) for shown in shop.impressions}
        assert f"{len(shop.impressions):,} recommendation impressions" in summary

    def test_running_again_stores_nothing_new(self):
        run("seed_demo", *SMALL_SHOP_OPTIONS, "--end-date", "2026-03-01")
        before = stored_events()
        impressions = Impression.objects.count()
        summary, _ = run("seed_demo", *SMALL_SHOP_OPTIONS, "--end-date", "2026-03-01")
        assert summary.count(" 0 of them new") == 2
        assert stored_events() == before
        assert Impression.objects.count() == impressions

    def test_another_seed_stores_other_events(self):
        run("seed_demo", *SMALL_SHOP_OPTIONS, "--end-date", "2026-03-01")
        first = stored_events()
        Event.objects.all().delete()
        run("seed_demo", *SMALL_SHOP_OPTIONS, "--end-date", "2026-03-01", "--seed", "8")
        assert stored_events().isdisjoint(first)

    def test_if_empty_does_nothing_when_events_exist(self):
        EventFactory()
        summary, _ = run("seed_demo", *SMALL_SHOP_OPTIONS, "--if-empty")
        assert "did nothing" in summary
        assert Event.objects.count() == 1

    def test_if_empty_seeds_an_empty_database_up_to_today(self):
        run("seed_demo", *SMALL_SHOP_OPTIONS, "--if-empty")
        latest = Event.objects.latest("timestamp").timestamp
        assert latest < window_end(datetime.now(UTC).date())
        assert Event.objects.count() > 100
