"""What every insight shares: the date range, the per-request PostgreSQL settings for
analytics reads, constants, and the helpers that shape aggregated rows.

Dates are calendar days in the project's TIME_ZONE; a ``DateRange`` covers whole days,
both ends included.
"""

import math
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from time import monotonic
from typing import Any, Literal

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone

from ingestion.models import Event, Item
from recommender.models import Impression


DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 731
# The days a range may cover: an insight also reads before its start (the range compared
# with: at most MAX_RANGE_DAYS, a month or a week more by month or week) and past its end (a
# week's or month's end), which must stay within the dates Python and databases represent.
EARLIEST_DAY = date(1900, 1, 1)
LATEST_DAY = date(9998, 12, 31)
SENTIMENT_LABELS = ("negative", "neutral", "positive")
RATED_EVENT_TYPES = ("rating", "review")
DEFAULT_FUNNEL_STEPS = ("view", "add_to_cart", "purchase")
Z_95 = 1.959963984540054

Period = Literal["day", "week"]


@dataclass(frozen=True)
class DateRange:
    start: date
    end: date

    @property
    def start_at(self) -> datetime:
        return timezone.make_aware(datetime.combine(self.start, time.min))

    @property
    def end_before(self) -> datetime:
        """Midnight after the last day: ranges are half-open on timestamps."""
        return timezone.make_aware(datetime.combine(self.end + timedelta(days=1), time.min))

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def dates(self) -> list[date]:
        return [self.start + timedelta(days=offset) for offset in range(self.days)]

    def previous(self) -> "DateRange":
        """The period of equal length that ends the day before this one starts."""
        return DateRange(start=self.start - timedelta(days=self.days),
                         end=self.start - timedelta(days=1))


# Per-request PostgreSQL settings for the analytics reads. work_mem is set explicitly to
# PostgreSQL's default, so that a server with a larger global work_mem plans these reads
# the same: with more, the planner expects the rollups' person-days to sort in memory and
# gives up the parallel plan (10M events, 120 days, p50 at 64 MB -> 4 MB: lifecycle 993 ->
# 655 ms, stickiness 853 -> 591, funnel by category 9.7 -> 7.8 s; 1M events within
# noise). JIT compilation, triggered by these queries' high cost estimates, costs more
# (about 300 ms a query) than it saves on scans this size.
ANALYTICS_WORK_MEM = "4MB"


# SQLite calls the progress handler every this many virtual machine instructions: a
# fraction of a millisecond apart, at no cost measurable against the statement.
SQLITE_PROGRESS_STEPS = 10_000
_sqlite_limited: ContextVar[bool] = ContextVar("analytics_sqlite_limited", default=False)


@contextmanager
def analytics_queries() -> Iterator[None]:
    """Runs the enclosed reads in one transaction, each statement limited to
    ANALYTICS_STATEMENT_TIMEOUT_SECONDS (config.db.is_statement_timeout tells the error
    apart). On PostgreSQL, with ANALYTICS_WORK_MEM and JIT off as well (SET LOCAL: the
    settings end with the transaction), and REPEATABLE READ, so the rollups, their
    watermark and the raw events after it are read from one snapshot: an update committing
    between two reads cannot count events twice or not at all. SQLite's transactions are
    snapshots already; its limit is _sqlite_statement_limit's."""
    outermost = not connection.in_atomic_block
    # A read past the limit is stopped rather than left to hold a web thread and load the
    # database ingestion writes to.
    limit = settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS
    with _read_transaction():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                if outermost:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                cursor.execute(f"SET LOCAL work_mem = '{ANALYTICS_WORK_MEM}'")
                cursor.execute("SET LOCAL jit = off")
                # At least 1 ms: PostgreSQL reads 0 as no limit.
                timeout_ms = math.ceil(limit * 1000) if limit > 0 else 0
                cursor.execute(f"SET LOCAL statement_timeout = {timeout_ms}")
            yield
        elif connection.vendor == "sqlite" and limit > 0 and not _sqlite_limited.get():
            with _sqlite_statement_limit(limit):
                yield
        else:
            yield


@contextmanager
def _read_transaction() -> Iterator[None]:
    """transaction.atomic, begun DEFERRED on SQLite: the IMMEDIATE mode its writers use
    (config/settings) takes the database's one write lock at BEGIN, which a dashboard's
    reads then held for their whole run, queueing every event stored meanwhile."""
    if connection.vendor != "sqlite" or connection.in_atomic_block:
        with transaction.atomic():
            yield
        return
    connection.ensure_connection()  # connecting sets the mode again
    mode, connection.transaction_mode = connection.transaction_mode, None
    try:
        with transaction.atomic():
            connection.transaction_mode = mode
            yield
    finally:
        connection.transaction_mode = mode


@contextmanager
def _sqlite_statement_limit(limit: float) -> Iterator[None]:
    """SQLite has no statement_timeout: a progress handler interrupts a statement that has
    run longer than `limit` seconds (OperationalError, SQLITE_INTERRUPT). A statement's time
    counts from its execute, and restarts with the next; it includes the time its rows take
    to be fetched, and where the caller reads them in chunks (paths on SQLite), the time the
    caller spends between chunks. The handler is removed on the way out."""
    started = [monotonic()]

    def mark_start(execute, sql, params, many, context):
        started[0] = monotonic()
        return execute(sql, params, many, context)

    def past_limit() -> bool:
        return monotonic() - started[0] > limit

    connection.ensure_connection()
    sqlite_connection = connection.connection
    token = _sqlite_limited.set(True)
    sqlite_connection.set_progress_handler(past_limit, SQLITE_PROGRESS_STEPS)
    try:
        with connection.execute_wrapper(mark_start):
            yield
    finally:
        sqlite_connection.set_progress_handler(None, SQLITE_PROGRESS_STEPS)
        _sqlite_limited.reset(token)


def default_date_range(*, today: date | None = None) -> DateRange:
    last_day = today or timezone.localdate()
    return DateRange(start=last_day - timedelta(days=DEFAULT_RANGE_DAYS - 1), end=last_day)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not denominator:
        return None
    return (numerator or 0) / denominator


def events_in_range(*, date_range: DateRange, category: str | None = None) -> QuerySet[Event]:
    events = Event.objects.filter(timestamp__gte=date_range.start_at,
                                  timestamp__lt=date_range.end_before)
    if category:
        events = events.filter(item__category=category)
    return events


def has_events() -> bool:
    return Event.objects.exists()


def has_impressions() -> bool:
    return Impression.objects.exists()


def category_list() -> list[str]:
    return list(Item.objects.exclude(category="").values_list("category", flat=True)
                .distinct().order_by("category"))



ITEM_FIELDS = ("item__item_id", "item__title", "item__category")


def sentiment_counts() -> dict[str, Any]:
    return {
        "reviews": Count("id", filter=Q(sentiment_label__in=SENTIMENT_LABELS)),
        **{label: Count("id", filter=Q(sentiment_label=label)) for label in SENTIMENT_LABELS},
    }


def with_shares(row: dict[str, Any]) -> dict[str, Any]:
    """Adds conversion and sentiment shares to an aggregated row."""
    row = renamed_item_fields(row)
    if "viewers" in row:
        row["conversion"] = ratio(row["purchasers"], row["viewers"])
        row["revenue"] = round(row["revenue"] or 0.0, 2)
        if row.get("average_rating") is not None:
            row["average_rating"] = round(row["average_rating"], 2)
    row["sentiment_shares"] = {label: ratio(row[label], row["reviews"])
                               for label in SENTIMENT_LABELS}
    return row


def renamed_item_fields(row: dict[str, Any]) -> dict[str, Any]:
    """`item__item_id` -> `item_id` etc.; the ORM cannot alias them so (Event.item_id exists)."""
    return {key.removeprefix("item__"): value for key, value in row.items()}
