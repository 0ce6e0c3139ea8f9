import uuid
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest

from ingestion.importers import (ImportStats, SourceFormatError, SourceRow, event_file_rows,
                                 import_rows, movielens_rows, numbered_lines, review_rows)
from ingestion.models import Event, Item
from ingestion.services import RowRejected

DATA = Path(__file__).parent / "data"


def events_of(rows) -> list[dict]:
    return [row.event for _, row in rows if isinstance(row, SourceRow)]


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class TestNumberedLines:
    def test_lines_are_numbered_from_one_and_a_byte_order_mark_is_dropped(self, tmp_path):
        path = tmp_path / "bom.csv"
        path.write_bytes("\ufeffa,b\r\nc,d\n".encode())
        assert list(numbered_lines(path, progress_to=None)) == [(1, "a,b\r\n"), (2, "c,d\n")]

    def test_a_line_that_is_not_utf8_stops_the_import_naming_the_line(self, tmp_path):
        path = tmp_path / "latin1.csv"
        path.write_bytes(b"ok\ncaf\xe9\n")
        with pytest.raises(SourceFormatError, match="line 2 is not UTF-8"):
            list(numbered_lines(path, progress_to=None))

    def test_progress_bar_counts_the_bytes_read(self, tmp_path):
        path = write(tmp_path, "u.data", "1\t2\t3\t4\n" * 50)
        bar = StringIO()
        assert len(list(numbered_lines(path, progress_to=bar))) == 50
        assert "u.data" in bar.getvalue() and "100%" in bar.getvalue()


class TestEventFileRows:
    def test_rows_without_event_id_get_one_from_their_content_whatever_the_key_order(
            self, tmp_path):
        path = write(tmp_path, "e.jsonl",
                     '{"type": "view", "user_id": "u1", "item_id": "a"}\n'
                     '{"item_id": "a", "user_id": "u1", "type": "view"}\n'
                     '{"type": "view", "user_id": "u1", "item_id": "b"}\n')
        ids = [event["event_id"] for event in events_of(event_file_rows(path))]
        assert ids[0] == ids[1] != ids[2]
        assert uuid.UUID(ids[0]).version == 5

    @pytest.mark.django_db
    def test_lines_no_column_could_store_are_rejects_not_a_stopped_import(self, tmp_path):
        # A lone surrogate (as JavaScript's slicing leaves one), an integer past Python's
        # 4,300 digits, a NUL character, NaN in the properties.
        path = write(tmp_path, "e.jsonl",
                     '{"type": "review", "user_id": "u1", "item_id": "a", '
                     '"text": "great \\ud83d"}\n'
                     '{"type": "view", "user_id": "u1", "item_id": "a", "properties": {"n": '
                     + "1" * 5000 + '}}\n'
                     '{"type": "view", "user_id": "u\\u0000", "item_id": "a"}\n'
                     '{"type": "view", "user_id": "u1", "item_id": "a", "properties": {"x": NaN}}\n'
                     '{"type": "view", "user_id": "u1", "item_id": "a"}\n')
        rows = list(event_file_rows(path))
        rejected = [(line, row.field) for line, row in rows if isinstance(row, RowRejected)]
        assert rejected == [(1, "event"), (2, "event")]
        reports: list[str] = []
        stats = import_rows(rows=rows, batch_size=10,
                            report_rejected=lambda line, e: reports.append(f"{line} {e.field}"))
        assert stats == ImportStats(imported=1, duplicates=0, rejected=4)
        assert reports == ["1 event", "2 event", "3 user_id", "4 properties"]

    def test_a_given_event_id_is_kept(self):
        first = events_of(event_file_rows(DATA / "events.jsonl"))[0]
        assert first["event_id"] == "6f1c2d3e-0000-4000-8000-000000000001"

    def test_empty_csv_cells_are_left_out_like_missing_json_keys(self):
        signup = [e for e in events_of(event_file_rows(DATA / "events.csv"))
                  if e["type"] == "signup"][0]
        assert set(signup) == {"event_id", "type", "user_id", "timestamp"}


class TestMovieLensRows:
    def test_the_three_formats_give_the_same_event_for_the_same_rating(self):
        u_data = events_of(movielens_rows(DATA / "u.data"))[0]
        inter = events_of(movielens_rows(DATA / "ml-100k.inter"))[0]
        assert u_data == inter
        assert u_data["event_id"] == uuid.uuid5(
            uuid.uuid5(uuid.NAMESPACE_URL, "urn:lodestar:import:movielens"), "196:242:881250949")
        assert u_data["timestamp"] == datetime(1997, 12, 4, 15, 55, 49, tzinfo=UTC)

    def test_columns_are_found_by_header_name(self, tmp_path):
        path = write(tmp_path, "ratings.csv",
                     "timestamp,rating,movieId,userId\n964982703,4.5,1,7\n")
        [event] = events_of(movielens_rows(path))
        assert (event["user_id"], event["item_id"], event["value"]) == ("7", "1", "4.5")

    def test_an_inter_file_without_timestamps_is_refused(self, tmp_path):
        path = write(tmp_path, "x.inter", "user_id:token\titem_id:token\trating:float\n1\t2\t3\n")
        with pytest.raises(SourceFormatError, match="no timestamp column"):
            list(movielens_rows(path))


class TestReviewRows:
    def test_review_id_or_else_the_content_names_the_event(self, tmp_path):
        path = write(tmp_path, "r.csv", "item_id,rating,text,review_id\n"
                                        "A,5,Great,r9\nA,5,Great,\nA,5,Great,\n")
        first, second, third = events_of(review_rows(path))
        assert first["user_id"] == "review-author-r9"
        assert second["event_id"] == third["event_id"] != first["event_id"]
        assert second["user_id"] == f"review-author-{second['event_id'].hex[:16]}"

    def test_a_label_column_is_kept_and_lets_the_rating_be_empty(self, tmp_path):
        path = write(tmp_path, "r.csv", "item_id,rating,text,label\n"
                                        "A,5,Great,Negative\nA,,Meh,neutral\nA,4,Fine,\n")
        first, second, third = events_of(review_rows(path))
        assert first["properties"] == {"label": "negative"} and first["value"] == "5"
        assert second["properties"] == {"label": "neutral"} and "value" not in second
        assert "properties" not in third and third["value"] == "4"

    def test_a_review_title_is_the_reviews_headline_and_title_the_items(self, tmp_path):
        path = write(tmp_path, "r.csv", "item_id,rating,text,review_title,title,label\n"
                                        "A,2,Too tight,Runs small ,Linen shirt,negative\n"
                                        "A,5,Lovely,,,\n")
        rows = [row for _, row in review_rows(path)]
        assert rows[0].event["properties"] == {"label": "negative",
                                               "review_title": "Runs small"}
        assert rows[0].event["text"] == "Too tight"
        assert rows[0].item == {"item_id": "A", "title": "Linen shirt"}
        assert "properties" not in rows[1].event

    def test_an_unknown_label_or_neither_rating_nor_label_is_rejected(self, tmp_path):
        path = write(tmp_path, "r.csv", "item_id,rating,text,label\nA,5,x,great\nA,,y,\n")
        rejected = [row for _, row in review_rows(path) if isinstance(row, RowRejected)]
        assert [error.field for error in rejected] == ["label", "rating"]

    def test_unix_times_in_seconds_or_milliseconds_are_understood(self, tmp_path):
        path = write(tmp_path, "r.csv", "item_id,rating,text,timestamp\n"
                                        "A,5,x,1768035600\nA,4,y,1768035600000\n")
        times = {event["timestamp"] for event in events_of(review_rows(path))}
        assert times == {datetime(2026, 1, 10, 9, tzinfo=UTC)}

    def test_only_rows_with_a_title_or_category_update_the_catalog(self):
        items = [row.item for _, row in review_rows(DATA / "reviews.csv")
                 if isinstance(row, SourceRow)]
        assert items[0] == {"item_id": "B001", "title": "Nordic Kettle", "category": "Kitchen"}
        assert items[1] is None


@pytest.mark.django_db
class TestImportRows:
    def import_(self, rows, batch_size=2) -> tuple[ImportStats, list[str]]:
        reports: list[str] = []
        stats = import_rows(rows=rows, batch_size=batch_size,
                            report_rejected=lambda line, e: reports.append(f"{line} {e.field}"))
        return stats, reports

    def view(self, n: int, **extra) -> SourceRow:
        return SourceRow(event={"event_id": str(uuid.UUID(int=n)), "type": "view",
                                "user_id": "u1", "item_id": f"i{n}",
                                "timestamp": "2026-01-01T00:00:00Z"}, **extra)

    def test_batches_store_every_valid_row_and_count_repeats_as_duplicates(self):
        rows = [(1, self.view(1)), (2, self.view(2)), (3, self.view(1)),
                (4, RowRejected("row", "Too short.")), (5, self.view(3))]
        stats, reports = self.import_(rows)
        assert stats == ImportStats(imported=3, duplicates=1, rejected=1)
        assert reports == ["4 row"]
        assert Event.objects.count() == 3

    def test_a_row_whose_catalog_fields_are_invalid_is_rejected_with_its_event(self):
        rows = [(1, self.view(1, item={"item_id": "i1", "title": "Kettle"})),
                (2, self.view(2, item={"item_id": "i2", "title": "x" * 501}))]
        stats, reports = self.import_(rows)
        assert stats == ImportStats(imported=1, duplicates=0, rejected=1)
        assert reports == ["2 title"]
        assert list(Event.objects.values_list("item__item_id", flat=True)) == ["i1"]
        assert Item.objects.get(item_id="i1").title == "Kettle"

    def test_far_future_rows_are_rejected_as_by_the_api(self):
        row = self.view(1)
        row.event["timestamp"] = "2999-01-01T00:00:00Z"
        stats, reports = self.import_([(1, row)])
        assert (stats.rejected, reports) == (1, ["1 timestamp"])
