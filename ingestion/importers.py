"""Streams event files into the event store for the `import_*` management commands.

A reader (`event_file_rows`, `movielens_rows`, `review_rows`) turns a file into numbered rows
in the API's event schema, one line at a time so a file of millions of rows never sits in
memory. `import_rows` validates every row with the API's own `parse_event`, stores the valid
ones in batches through `store_events` and reports each rejected row by its line number.

Event ids are uuid5s of the source row (or the row's own event_id), so importing a file
again stores nothing new: every row counts as a duplicate.
"""

import csv
import json
import math
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import reset_queries
from django.utils import timezone
from tqdm import tqdm

from ingestion.models import REVIEW_TITLE_PROPERTY
from ingestion.services import (
    EVENT_FIELDS,
    SURROGATE_MESSAGE,
    EventInput,
    RowRejected,
    parse_event,
    store_events,
    upsert_items,
)

DEFAULT_BATCH_SIZE = 5000
# Python's csv refuses a cell over 131,072 characters as a malformed file, which would
# stop an import at that line on every run: a long cell is read, and its row rejected
# by the same limits as the API's (text, properties).
csv.field_size_limit(16 * 1024 * 1024)

# One namespace per source kind: the same key read from two kinds of file names two events.
EVENT_FILE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lodestar:import:events")
MOVIELENS_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lodestar:import:movielens")
REVIEW_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:lodestar:import:reviews")

REVIEW_REQUIRED_COLUMNS = {"item_id", "rating", "text"}
REVIEW_OPTIONAL_COLUMNS = {"user_id", "review_id", REVIEW_TITLE_PROPERTY, "title", "category",
                           "timestamp", "label"}
# A label given by hand outranks the rating when the sentiment model learns from reviews.
REVIEW_LABELS = ("positive", "negative", "neutral")
# Unix times above this are in milliseconds (seconds would be past the year 5000).
MILLISECONDS_THRESHOLD = 1e11


class SourceFormatError(Exception):
    """The file as a whole cannot be read: unknown format, missing columns, not UTF-8."""


@dataclass(frozen=True, slots=True)
class SourceRow:
    event: dict[str, Any]
    # Catalog fields (item_id, title, category) to upsert before the event is stored.
    item: dict[str, str] | None = None


# (line number, row) or (line number, why the line cannot become a row).
NumberedRow = tuple[int, SourceRow | RowRejected]
RowReader = Callable[..., Iterator[NumberedRow]]


@dataclass
class ImportStats:
    imported: int = 0
    duplicates: int = 0
    rejected: int = 0

    def summary(self) -> str:
        return (f"imported {self.imported}, duplicates {self.duplicates}, "
                f"rejected {self.rejected}")


def numbered_lines(path: Path, *, progress_to: TextIO | None) -> Iterator[tuple[int, str]]:
    """Yields (line number from 1, line with its line ending), reading one line at a time.

    The progress bar counts bytes, so it knows its total without counting lines first."""
    with path.open("rb") as source, tqdm(total=path.stat().st_size, unit="B",
                                         unit_scale=True, unit_divisor=1024, desc=path.name,
                                         file=progress_to, disable=progress_to is None,
                                         mininterval=0.5) as bar:
        for number, raw in enumerate(source, start=1):
            bar.update(len(raw))
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise SourceFormatError(f"line {number} is not UTF-8 text.") from None
            yield number, text.removeprefix("\ufeff") if number == 1 else text


def import_rows(*, rows: Iterable[NumberedRow], report_rejected: Callable[[int, RowRejected], None],
                batch_size: int = DEFAULT_BATCH_SIZE) -> ImportStats:
    """Validates rows as the event API does and stores the valid ones, batch_size at a time.

    A batch is committed before the next is read, so an interrupted import keeps what it
    stored and a re-run completes it. Rows rejected by the catalog check are reported when
    their batch is stored, so reports can come after later lines' reports."""
    now = timezone.now()
    stats = ImportStats()

    def reject(line: int, error: RowRejected) -> None:
        stats.rejected += 1
        report_rejected(line, error)

    batch: list[tuple[int, SourceRow, EventInput]] = []
    for line, row in rows:
        if isinstance(row, RowRejected):
            reject(line, row)
            continue
        try:
            batch.append((line, row, parse_event(row.event, now=now)))
        except RowRejected as error:
            reject(line, error)
            continue
        if len(batch) >= batch_size:
            _store_batch(batch, stats=stats, reject=reject)
            batch = []
    if batch:
        _store_batch(batch, stats=stats, reject=reject)
    return stats


def _store_batch(batch: list[tuple[int, SourceRow, EventInput]], *, stats: ImportStats,
                 reject: Callable[[int, RowRejected], None]) -> None:
    # Catalog and events commit separately, as store_events keeps its user/item writes in
    # short transactions of their own; a crash in between is repaired by a re-run.
    catalog_lines = [(line, row.item) for line, row, _ in batch if row.item]
    rejected_lines: set[int] = set()
    if catalog_lines:
        result = upsert_items(items=[item for _, item in catalog_lines])
        for error in result.errors:
            line = catalog_lines[error.index][0]
            rejected_lines.add(line)
            reject(line, RowRejected(error.field, error.message))
    events = [event for line, _, event in batch if line not in rejected_lines]
    # Each batch is received when its events are stored (store_events stamps them), not
    # when the import began: analytics rollups move past received times a minute old, and
    # a long import's later batches would commit behind them.
    stored = store_events(events=events, received_at=None)
    stats.imported += len(stored)
    stats.duplicates += len(events) - len(stored)
    # With DEBUG on (local settings) Django keeps the SQL of every query, each insert's SQL
    # holding a thousand rows: without this a long import's memory grows with the file.
    reset_queries()


def _guarded(records: Iterable[tuple[int, Any]],
             to_row: Callable[[Any], SourceRow]) -> Iterator[NumberedRow]:
    for line, record in records:
        try:
            yield line, to_row(record)
        except RowRejected as error:
            yield line, error


def _csv_records(lines: Iterator[tuple[int, str]], *,
                 delimiter: str = ",") -> Iterator[tuple[int, list[str]]]:
    """Yields (line the record starts on, cells); quoted cells may span lines."""
    reader = csv.reader((text for _, text in lines), delimiter=delimiter)
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            raise SourceFormatError(f"line {reader.line_num}: {error}") from None
        if cells:
            yield start, cells
        start = reader.line_num + 1


def _csv_header(records: Iterator[tuple[int, list[str]]]) -> list[str]:
    first = next(records, None)
    if first is None:
        raise SourceFormatError("The file is empty.")
    return [name.strip() for name in first[1]]


def _cells_by_column(header: list[str], cells: list[str]) -> dict[str, str]:
    if len(cells) != len(header):
        raise RowRejected("row", f"Has {len(cells)} columns; the header has {len(header)}.")
    return dict(zip(header, cells))


def _unix_time(raw: str) -> tuple[datetime, str]:
    """Parses unix seconds (milliseconds when that large) into an aware UTC datetime and the
    canonical text used in event-id keys, so 881250949 and 881250949.0 name the same event."""
    try:
        seconds = float(raw)
        if not math.isfinite(seconds):
            raise ValueError(raw)
        if abs(seconds) > MILLISECONDS_THRESHOLD:
            seconds /= 1000
        moment = datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        raise RowRejected("timestamp", "Must be a unix time in seconds.") from None
    return moment, str(int(seconds)) if seconds.is_integer() else repr(seconds)


# --- import_events: the API's event schema as JSON lines or CSV ---------------------------

def event_file_rows(path: Path, *, progress_to: TextIO | None = None) -> Iterator[NumberedRow]:
    """Rows of a JSONL file (one event object a line) or, for a .csv file, a CSV whose header
    names event fields; `properties` cells hold a JSON object. Rows without an event_id get
    the uuid5 of their canonical JSON."""
    lines = numbered_lines(path, progress_to=progress_to)
    if path.suffix.lower() == ".csv":
        records = _csv_records(lines)
        header = _csv_header(records)
        unknown = sorted(set(header) - EVENT_FIELDS)
        if unknown:
            raise SourceFormatError(f"Unknown column {unknown[0]!r}; the columns are the "
                                    f"event fields: {', '.join(sorted(EVENT_FIELDS))}.")
        yield from _guarded(records, lambda cells: _event_from_csv(header, cells))
    else:
        yield from _guarded(((line, text) for line, text in lines if text.strip()),
                            _event_from_json_line)


def _event_from_json_line(text: str) -> SourceRow:
    try:
        event = json.loads(text)
    # ValueError: also an integer of over 4,300 digits; RecursionError: nesting too deep.
    except (ValueError, RecursionError) as error:
        raise RowRejected("event", f"Is not valid JSON ({_json_error(error)}).") from None
    return SourceRow(event=_with_stable_event_id(event))


def _json_error(error: Exception) -> str:
    return error.msg if isinstance(error, json.JSONDecodeError) else str(error)


def _event_from_csv(header: list[str], cells: list[str]) -> SourceRow:
    # An empty cell is a field left out, as if the key were missing from a JSON event.
    cells_by_column = _cells_by_column(header, cells)
    event: dict[str, Any] = {name: value for name, value in cells_by_column.items() if value}
    if "properties" in event:
        try:
            event["properties"] = json.loads(event["properties"])
        except (ValueError, RecursionError) as error:
            raise RowRejected("properties", f"Is not valid JSON ({_json_error(error)}).") \
                from None
    return SourceRow(event=_with_stable_event_id(event))


def _with_stable_event_id(event: Any) -> Any:
    if not isinstance(event, dict) or event.get("event_id") not in (None, ""):
        return event
    canonical = json.dumps({k: v for k, v in event.items() if k != "event_id"},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        return {**event, "event_id": str(uuid.uuid5(EVENT_FILE_NAMESPACE, canonical))}
    except UnicodeEncodeError:  # a lone surrogate, which no column could store either
        raise RowRejected("event", SURROGATE_MESSAGE) from None


# --- import_movielens: u.data, RecBole .inter, ratings.csv --------------------------------

@dataclass(frozen=True, slots=True)
class _RatingsLayout:
    delimiter: str
    width: int
    # Positions of the user, item, rating and timestamp fields.
    columns: tuple[int, int, int, int]


def movielens_rows(path: Path, *, progress_to: TextIO | None = None) -> Iterator[NumberedRow]:
    """Rating events from MovieLens `u.data` (user, item, rating, unix time; tab-separated, no
    header), a RecBole `.inter` file (tab-separated, typed header such as `user_id:token`) or
    MovieLens `ratings.csv` (header userId,movieId,rating,timestamp); the format is detected
    from the first line."""
    lines = numbered_lines(path, progress_to=progress_to)
    first = next(lines, None)
    if first is None:
        raise SourceFormatError("The file is empty.")
    layout, first_is_header = _detect_ratings_layout(first[1])
    if not first_is_header:
        yield from _guarded([first], lambda text: _rating_row(text, layout))
    yield from _guarded(((line, text) for line, text in lines if text.strip()),
                        lambda text: _rating_row(text, layout))


def _detect_ratings_layout(first_line: str) -> tuple[_RatingsLayout, bool]:
    text = first_line.rstrip("\r\n")
    tab_fields = text.split("\t")
    if ":" in tab_fields[0]:
        names = [field.split(":", 1)[0].strip() for field in tab_fields]
        return _layout_from_header(names, "\t", ("user_id", "item_id", "rating", "timestamp"),
                                   "RecBole .inter"), True
    comma_fields = [field.strip() for field in text.split(",")]
    if "userId" in comma_fields:
        return _layout_from_header(comma_fields, ",", ("userId", "movieId", "rating",
                                                       "timestamp"), "ratings.csv"), True
    if len(tab_fields) == 4:
        return _RatingsLayout(delimiter="\t", width=4, columns=(0, 1, 2, 3)), False
    raise SourceFormatError("Not a MovieLens u.data (4 tab-separated fields), RecBole .inter "
                            "(typed header such as user_id:token) or ratings.csv (header "
                            "userId,movieId,rating,timestamp) file.")


def _layout_from_header(names: list[str], delimiter: str, wanted: tuple[str, str, str, str],
                        kind: str) -> _RatingsLayout:
    missing = [name for name in wanted if name not in names]
    if missing:
        raise SourceFormatError(f"The {kind} header has no {', '.join(missing)} column.")
    user, item, rating, timestamp = (names.index(name) for name in wanted)
    return _RatingsLayout(delimiter=delimiter, width=len(names),
                          columns=(user, item, rating, timestamp))


def _rating_row(text: str, layout: _RatingsLayout) -> SourceRow:
    fields = text.rstrip("\r\n").split(layout.delimiter)
    if len(fields) != layout.width:
        raise RowRejected("row", f"Has {len(fields)} fields; expected {layout.width}.")
    user, item, rating, seconds = (fields[position].strip() for position in layout.columns)
    timestamp, time_key = _unix_time(seconds)
    event_id = uuid.uuid5(MOVIELENS_NAMESPACE, f"{user}:{item}:{time_key}")
    return SourceRow(event={"event_id": event_id, "type": "rating", "user_id": user,
                            "item_id": item, "timestamp": timestamp, "value": rating})


# --- import_reviews: product reviews CSV --------------------------------------------------

def review_rows(path: Path, *, progress_to: TextIO | None = None,
                headline_column: str = REVIEW_TITLE_PROPERTY) -> Iterator[NumberedRow]:
    """Review events from a CSV with columns item_id, rating, text and optionally user_id,
    review_id, review_title, title, category, timestamp, label (other columns are ignored).

    label (positive, negative or neutral) is stored as the event's ``properties.label``,
    which sentiment training prefers to the rating; a labelled row may leave rating empty.

    A review without user_id gets the author `review-author-<review_id>` (or a hash of the
    review when it has no review_id either). A review without timestamp is dated at the
    file's modification time: deterministic for a given file, and near when it was exported.
    review_title, the review's headline, is stored as ``properties.review_title`` and read
    by sentiment before the text; title and category update the catalog item.
    headline_column names another column as the headline (exports that call it "title",
    as the clothing reviews file does); that column then leaves the catalog alone."""
    default_time = datetime.fromtimestamp(int(path.stat().st_mtime), UTC)
    records = _csv_records(numbered_lines(path, progress_to=progress_to))
    header = _csv_header(records)
    missing = sorted(REVIEW_REQUIRED_COLUMNS - set(header))
    if missing:
        raise SourceFormatError(f"Missing column {missing[0]!r}; a reviews CSV needs "
                                f"{', '.join(sorted(REVIEW_REQUIRED_COLUMNS))} and may have "
                                f"{', '.join(sorted(REVIEW_OPTIONAL_COLUMNS))}.")
    if headline_column != REVIEW_TITLE_PROPERTY and headline_column not in header:
        raise SourceFormatError(f"No column {headline_column!r} to read headlines from.")
    yield from _guarded(records, lambda cells: _review_row(
        _cells_by_column(header, cells), default_time=default_time,
        headline_column=headline_column))


def _review_row(cells: dict[str, str], *, default_time: datetime,
                headline_column: str) -> SourceRow:
    item_id, rating, text = cells["item_id"].strip(), cells["rating"].strip(), cells["text"]
    review_id = cells.get("review_id", "").strip()
    user_id = cells.get("user_id", "").strip()
    key = f"id:{review_id}" if review_id else \
        "content:" + json.dumps([item_id, user_id, text, rating], ensure_ascii=False)
    event_id = uuid.uuid5(REVIEW_NAMESPACE, key)
    raw_time = cells.get("timestamp", "").strip()
    if not raw_time:
        timestamp: datetime | str = default_time
    elif raw_time.replace(".", "", 1).isdigit():
        timestamp = _unix_time(raw_time)[0]
    else:
        timestamp = raw_time
    label = cells.get("label", "").strip().lower()
    if label and label not in REVIEW_LABELS:
        raise RowRejected("label", f"label must be one of {', '.join(REVIEW_LABELS)}, "
                                   f"not {label!r}.")
    if not rating and not label:
        raise RowRejected("rating", "A review needs a rating (0.5-5) or a label.")
    catalog = {name: cells[name].strip() for name in ("title", "category")
               if name != headline_column and cells.get(name, "").strip()}
    event = {"event_id": event_id, "type": "review", "timestamp": timestamp,
             "user_id": user_id or f"review-author-{review_id or event_id.hex[:16]}",
             "item_id": item_id, "text": text}
    if rating:
        event["value"] = rating
    properties = {"label": label} if label else {}
    if headline := cells.get(headline_column, "").strip():
        properties[REVIEW_TITLE_PROPERTY] = headline
    if properties:
        event["properties"] = properties
    return SourceRow(event=event, item={"item_id": item_id, **catalog} if catalog else None)


# --- The shared command ------------------------------------------------------------------

class ImportCommand(BaseCommand):
    """The import_* commands: read a file with `read_rows`, store it, print a summary.

    Subclasses set `read_rows = staticmethod(<reader>)`."""

    read_rows: RowReader
    file_help = "File to import."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path, help=self.file_help)
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                            help=f"Rows stored per batch (default {DEFAULT_BATCH_SIZE}).")
        parser.add_argument("--no-progress", action="store_true",
                            help="No progress bar (there is none when stderr is not a terminal).")

    def handle(self, *args: Any, file: Path, batch_size: int, no_progress: bool,
               **options: Any) -> None:
        if not file.is_file():
            raise CommandError(f"{file}: no such file.")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        show_progress = not no_progress and sys.stderr.isatty()
        rows = self.read_rows(file, progress_to=sys.stderr if show_progress else None,
                              **self.reader_options(options))
        try:
            stats = import_rows(rows=rows, batch_size=batch_size,
                                report_rejected=self._report_rejected)
        except SourceFormatError as error:
            raise CommandError(f"{file}: {error}") from None
        self.stdout.write(stats.summary())

    def reader_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments for `read_rows` from a subclass's own options."""
        return {}

    def _report_rejected(self, line: int, error: RowRejected) -> None:
        # Clears the progress bar while the line is written, then redraws it below.
        with tqdm.external_write_mode(file=sys.stderr):
            self.stderr.write(f"line {line}: {error.field}: {error.message}")
