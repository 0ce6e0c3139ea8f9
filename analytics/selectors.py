"""Product analytics read from the event log.

Every aggregate runs in the database (ORM annotations, or portable SQL where the ORM cannot
express a per-user ordered funnel); Python only reshapes the small aggregated rows, so the
cost grows with the number of days, items and steps shown, never with the number of events.

Dates are calendar days in the project's TIME_ZONE; a ``DateRange`` covers whole days,
both ends included.
"""

import math
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, Literal

from django.db import connection, transaction
from django.db.models import (
    Count,
    DateField,
    F,
    FloatField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Window,
)
from django.db.models.functions import Cast, Coalesce, RowNumber, Trunc, TruncDate
from django.utils import timezone

from ingestion.models import ITEM_EVENT_TYPES, EndUser, Event, IdentityLink, Item
from ingestion.selectors import person_first_seen, person_key
from recommender.models import Impression, ModelVersion

DEFAULT_RANGE_DAYS = 30
MAX_RANGE_DAYS = 731
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


# Per-request PostgreSQL settings for the analytics reads: the exact distinct counts and
# funnel step tables sort or hash a few hundred thousand rows, which spills to disk under
# the default 4 MB work_mem; and JIT compilation, triggered by these queries' high cost
# estimates, costs more (about 300 ms a query) than it saves on scans this size.
ANALYTICS_WORK_MEM = "64MB"


@contextmanager
def analytics_queries() -> Iterator[None]:
    """Runs the enclosed reads in one transaction with ANALYTICS_WORK_MEM and JIT off
    (SET LOCAL: the settings end with the transaction). A no-op outside PostgreSQL."""
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"SET LOCAL work_mem = '{ANALYTICS_WORK_MEM}'")
                cursor.execute("SET LOCAL jit = off")
        yield


def default_date_range(*, today: date | None = None) -> DateRange:
    last_day = today or timezone.localdate()
    return DateRange(start=last_day - timedelta(days=DEFAULT_RANGE_DAYS - 1), end=last_day)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not denominator:
        return None
    return (numerator or 0) / denominator


def _events(*, date_range: DateRange, category: str | None = None) -> QuerySet[Event]:
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


# Overview -------------------------------------------------------------------------------


def overview(*, date_range: DateRange, category: str | None = None) -> dict[str, Any]:
    """Active users (DAU per day; WAU and MAU over the 7 and 30 days ending on the last day),
    new vs returning users per day (new = first seen that day, from EndUser.first_seen),
    events by type per day, purchases and revenue per day, and stickiness: the average DAU
    over the range divided by MAU."""
    events = _events(date_range=date_range, category=category)
    daily_active = dict(events.annotate(day=TruncDate("timestamp")).values("day")
                        .annotate(users=Count(person_key(), distinct=True))
                        .values_list("day", "users"))
    if category:
        # New to the product that day and active in the category that day.
        daily_new = dict(events.annotate(day=TruncDate("timestamp"),
                                         first_day=TruncDate(person_first_seen()))
                         .values("day")
                         .annotate(users=Count(person_key(), distinct=True,
                                               filter=Q(first_day=F("day"))))
                         .values_list("day", "users"))
    else:
        # first_seen is the timestamp of the user's first event, so every user first seen
        # on a day was active that day: counting EndUser rows avoids a join over the events.
        # A linked alias is not a user of its own (its person's first_seen covers it).
        daily_new = dict(EndUser.objects.filter(first_seen__gte=date_range.start_at,
                                                first_seen__lt=date_range.end_before,
                                                identity_link__isnull=True)
                         .annotate(day=TruncDate("first_seen")).values("day")
                         .annotate(users=Count("id")).values_list("day", "users"))
    daily_types: dict[date, dict[str, int]] = defaultdict(dict)
    daily_revenue: dict[date, float] = defaultdict(float)
    type_totals: dict[str, int] = defaultdict(int)
    for row in (events.annotate(day=TruncDate("timestamp")).values("day", "type")
                .annotate(events=Count("id"), value_sum=Sum("value"))):
        daily_types[row["day"]][row["type"]] = row["events"]
        type_totals[row["type"]] += row["events"]
        if row["type"] == "purchase":
            daily_revenue[row["day"]] += row["value_sum"] or 0.0

    # One scan over the range and the 30 days ending on its last day, whichever is longer.
    month_start = date_range.end_before - timedelta(days=30)
    both = DateRange(start=min(date_range.start, date_range.end - timedelta(days=29)),
                     end=date_range.end)
    # Each user's latest event in that span says which of the four windows they were
    # active in: one hash aggregate per user instead of four sorted DISTINCT counts.
    latest_per_user = (_events(date_range=both, category=category)
                       .annotate(person=person_key()).values("person")
                       .annotate(latest=Max("timestamp")))
    active = latest_per_user.aggregate(
        active_users=Count("person", filter=Q(latest__gte=date_range.start_at)),
        mau=Count("person", filter=Q(latest__gte=month_start)),
        wau=Count("person", filter=Q(latest__gte=date_range.end_before - timedelta(days=7))),
        dau=Count("person", filter=Q(latest__gte=date_range.end_before - timedelta(days=1))),
    )

    days = []
    for day in date_range.dates():
        active_users = daily_active.get(day, 0)
        new_users = daily_new.get(day, 0)
        by_type = daily_types.get(day, {})
        days.append({
            "date": day,
            "active_users": active_users,
            "new_users": new_users,
            "returning_users": active_users - new_users,
            "events": sum(by_type.values()),
            "events_by_type": by_type,
            "purchases": by_type.get("purchase", 0),
            "revenue": round(daily_revenue.get(day, 0.0), 2),
        })
    average_dau = sum(day["active_users"] for day in days) / len(days)
    return {
        "dau": active["dau"],
        "wau": active["wau"],
        "mau": active["mau"],
        "average_dau": round(average_dau, 2),
        "stickiness": _ratio(average_dau, active["mau"]),
        "active_users": active["active_users"],
        "events": sum(type_totals.values()),
        "events_by_type": dict(sorted(type_totals.items(), key=lambda kv: -kv[1])),
        "purchases": type_totals.get("purchase", 0),
        "revenue": round(sum(daily_revenue.values()), 2),
        "days": days,
    }


# Funnels --------------------------------------------------------------------------------


def _sql_add_days(column: str) -> str:
    """SQL for `column + N days` with N as the next query parameter."""
    if connection.vendor == "postgresql":
        return f"({column} + %s * INTERVAL '1 day')"
    # SQLite stores datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text; this keeps that shape
    # so comparisons with stored values stay text comparisons in time order.
    return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {column}, %s)"


def _days_param(days: int) -> Any:
    return days if connection.vendor == "postgresql" else f"+{days} days"


def _sql_seconds_between(earlier: str, later: str) -> str:
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def _funnel_rows(*, date_range: DateRange, steps: list[str], window_days: int,
                 category: str | None, by_category: bool) -> list[tuple]:
    """One query: for each (category, step) the users who reached the step and the median
    seconds from the previous step.

    Step 1 is each user's first event of that type in the range. Step k is the user's
    earliest event of type k strictly after their step k-1 time and no later than the
    first step time + window_days. With by_category every step must happen on an item of
    the same category, and a user can count in several categories."""
    event_table = connection.ops.quote_name(Event._meta.db_table)
    item_table = connection.ops.quote_name(Item._meta.db_table)
    link_table = connection.ops.quote_name(IdentityLink._meta.db_table)
    # Steps are counted per person: a linked anonymous id's events are its person's (a
    # product viewed before signing in and bought after is one user's funnel). The link
    # table is small, so each event costs one hash probe, not a join through the users.
    link_join = f"LEFT JOIN {link_table} l ON l.alias_id = e.user_id"
    person = "COALESCE(l.person_id, e.user_id)"
    join_items = by_category or bool(category)
    # The deadline placeholder comes first in the SQL text, before the WHERE clause.
    params: list[Any] = [_days_param(window_days)]
    first_filters = ["e.type = %s", "e.timestamp >= %s", "e.timestamp < %s"]
    params += [steps[0], connection.ops.adapt_datetimefield_value(date_range.start_at),
               connection.ops.adapt_datetimefield_value(date_range.end_before)]
    if category:
        first_filters.append("i.category = %s")
        params.append(category)
    category_column = "i.category" if by_category else "''"
    first_group_by = f"{person}, i.category" if by_category else person
    item_join = f"JOIN {item_table} i ON i.id = e.item_id" if join_items else ""
    ctes = [
        f"step0 AS (SELECT user_id, category, reached_at, {_sql_add_days('reached_at')} "
        f"AS deadline FROM (SELECT {person} AS user_id, {category_column} AS category, "
        f"MIN(e.timestamp) AS reached_at FROM {event_table} e {link_join} {item_join} "
        f"WHERE {' AND '.join(first_filters)} GROUP BY {first_group_by}) firsts)"
    ]
    # Bounds the later steps' scan to the (type, timestamp) index range they can fall in.
    latest_possible = date_range.end_before + timedelta(days=window_days)
    for index, step in enumerate(steps[1:], start=1):
        same_category = ""
        if join_items:
            same_category = (f"JOIN {item_table} i ON i.id = e.item_id AND "
                             + ("i.category = p.category" if by_category else "i.category = %s"))
        ctes.append(
            f"step{index} AS (SELECT p.user_id, p.category, MIN(e.timestamp) AS reached_at, "
            f"p.deadline FROM step{index - 1} p JOIN ({event_table} e {link_join}) "
            f"ON {person} = p.user_id "
            f"AND e.type = %s AND e.timestamp > p.reached_at AND e.timestamp <= p.deadline "
            f"AND e.timestamp >= %s AND e.timestamp < %s "
            f"{same_category} GROUP BY p.user_id, p.category, p.deadline)")
        params += [step, connection.ops.adapt_datetimefield_value(date_range.start_at),
                   connection.ops.adapt_datetimefield_value(latest_possible)]
        if join_items and not by_category:
            params.append(category)

    counts = [f"SELECT 'users' AS metric, {index} AS step, category, COUNT(*) AS amount "
              f"FROM step{index} GROUP BY category" for index in range(len(steps))]
    gaps = [f"SELECT {index} AS step, b.category AS category, "
            f"{_sql_seconds_between('a.reached_at', 'b.reached_at')} AS seconds "
            f"FROM step{index - 1} a JOIN step{index} b "
            f"ON b.user_id = a.user_id AND b.category = a.category"
            for index in range(1, len(steps))]
    medians = ""
    if gaps:
        medians = (
            " UNION ALL SELECT 'median_seconds', step, category, AVG(seconds) FROM ("
            "SELECT step, category, seconds, ROW_NUMBER() OVER (PARTITION BY step, category "
            "ORDER BY seconds) AS position, COUNT(*) OVER (PARTITION BY step, category) AS n "
            f"FROM ({' UNION ALL '.join(gaps)}) gaps) ranked "
            "WHERE position IN ((n + 1) / 2, (n + 2) / 2) GROUP BY step, category")
    sql = f"WITH {', '.join(ctes)} {' UNION ALL '.join(counts)}{medians}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _funnel_steps(*, steps: list[str], users: dict[int, int],
                  medians: dict[int, float]) -> list[dict[str, Any]]:
    first = users.get(0, 0)
    result = []
    for index, name in enumerate(steps):
        reached = users.get(index, 0)
        previous = users.get(index - 1, 0) if index else reached
        median = medians.get(index)
        result.append({
            "name": name,
            "users": reached,
            "conversion": _ratio(reached, previous) if index else (1.0 if reached else None),
            "overall_conversion": _ratio(reached, first),
            "median_seconds_from_previous": round(median, 1) if median is not None else None,
        })
    return result


def funnel(*, date_range: DateRange, steps: list[str], window_days: int = 7,
           category: str | None = None, breakdown: Literal["category"] | None = "category",
           breakdown_limit: int = 20) -> dict[str, Any]:
    """Users per ordered step with step conversion (from the previous step), overall
    conversion (from the first step) and the median time between consecutive steps; plus,
    with breakdown="category", the same funnel per item category (the largest
    `breakdown_limit` categories by step 1). The breakdown is a second pass over the events
    and costs more than the funnel itself; without it `breakdown` is empty."""
    totals: dict[int, int] = {}
    total_medians: dict[int, float] = {}
    for metric, step, _, amount in _funnel_rows(date_range=date_range, steps=steps,
                                                window_days=window_days, category=category,
                                                by_category=False):
        if metric == "users":
            totals[int(step)] = int(amount)
        else:
            total_medians[int(step)] = float(amount)

    category_users: dict[str, dict[int, int]] = defaultdict(dict)
    category_medians: dict[str, dict[int, float]] = defaultdict(dict)
    category_rows = _funnel_rows(date_range=date_range, steps=steps, window_days=window_days,
                                 category=category, by_category=True) if breakdown else []
    for metric, step, category_name, amount in category_rows:
        if metric == "users":
            category_users[category_name][int(step)] = int(amount)
        else:
            category_medians[category_name][int(step)] = float(amount)
    largest = sorted(category_users, key=lambda name: (-category_users[name].get(0, 0), name))
    breakdown = [
        {"category": name,
         "steps": _funnel_steps(steps=steps, users=category_users[name],
                                medians=category_medians[name])}
        for name in largest[:breakdown_limit]
    ]
    step_rows = _funnel_steps(steps=steps, users=totals, medians=total_medians)
    return {
        "steps": step_rows,
        "window_days": window_days,
        "overall_conversion": step_rows[-1]["overall_conversion"],
        "breakdown": breakdown,
    }


# Retention ------------------------------------------------------------------------------


def retention(*, date_range: DateRange, period: Period = "week",
              category: str | None = None) -> dict[str, Any]:
    """Cohorts of users by the period of their first event ever (EndUser.first_seen) within
    the range; for each cohort the share active 0, 1, 2... periods later, up to the end of the
    range. Weeks start on Monday. With a category, activity means events on its items and a
    cohort's size counts only users with such activity in the range."""
    events = _events(date_range=date_range, category=category).annotate(
        person=person_key(), person_first_seen=person_first_seen()).filter(
        person_first_seen__gte=date_range.start_at, person_first_seen__lt=date_range.end_before)
    cohort = Trunc("person_first_seen", period, output_field=DateField())
    active_period = Trunc("timestamp", period, output_field=DateField())
    if category:
        sizes = dict(events.annotate(cohort=cohort).values("cohort")
                     .annotate(users=Count("person", distinct=True))
                     .values_list("cohort", "users"))
    else:
        sizes = dict(EndUser.objects.filter(first_seen__gte=date_range.start_at,
                                            first_seen__lt=date_range.end_before,
                                            identity_link__isnull=True)
                     .annotate(cohort=Trunc("first_seen", period, output_field=DateField()))
                     .values("cohort").annotate(users=Count("id"))
                     .values_list("cohort", "users"))
    active: dict[date, dict[int, int]] = defaultdict(dict)
    step_days = 7 if period == "week" else 1
    for row in (events.annotate(cohort=cohort, active_period=active_period)
                .values("cohort", "active_period")
                .annotate(users=Count("person", distinct=True))):
        offset = (row["active_period"] - row["cohort"]).days // step_days
        active[row["cohort"]][offset] = row["users"]

    last_period = date_range.end - timedelta(
        days=date_range.end.weekday() if period == "week" else 0)
    cohorts = []
    for cohort_start in sorted(sizes):
        size = sizes[cohort_start]
        observable = (last_period - cohort_start).days // step_days + 1
        counts = [active[cohort_start].get(offset, 0) for offset in range(observable)]
        cohorts.append({
            "cohort": cohort_start,
            "users": size,
            "active": counts,
            "retention": [_ratio(count, size) for count in counts],
        })
    periods = max((len(row["active"]) for row in cohorts), default=0)
    return {"period": period, "periods": periods, "cohorts": cohorts}


# Items ----------------------------------------------------------------------------------


def _sentiment_annotations() -> dict[str, Any]:
    return {
        "reviews": Count("id", filter=Q(sentiment_label__in=SENTIMENT_LABELS)),
        **{label: Count("id", filter=Q(sentiment_label=label)) for label in SENTIMENT_LABELS},
    }


def _with_shares(row: dict[str, Any]) -> dict[str, Any]:
    """Adds conversion and sentiment shares to an aggregated row."""
    row = _renamed_item_fields(row)
    if "viewers" in row:
        row["conversion"] = _ratio(row["purchasers"], row["viewers"])
        row["revenue"] = round(row["revenue"] or 0.0, 2)
        if row.get("average_rating") is not None:
            row["average_rating"] = round(row["average_rating"], 2)
    row["sentiment_shares"] = {label: _ratio(row[label], row["reviews"])
                               for label in SENTIMENT_LABELS}
    return row


ItemOrder = Literal["views", "revenue", "conversion", "average_rating"]
ITEM_FIELDS = ("item__item_id", "item__title", "item__category")
# The additive per-item totals of _item_totals, in its SELECT order after item and category.
_TOTAL_FIELDS = ("events", "views", "previous_views", "purchases", "revenue", "rating_sum",
                 "ratings", *SENTIMENT_LABELS)


def _renamed_item_fields(row: dict[str, Any]) -> dict[str, Any]:
    """`item__item_id` -> `item_id` etc.; the ORM cannot alias them so (Event.item_id exists)."""
    return {key.removeprefix("item__"): value for key, value in row.items()}


def _sql_in(values: tuple[str, ...] | list[Any]) -> str:
    return ", ".join(["%s"] * len(values))


def _item_totals(*, date_range: DateRange, category: str | None,
                 with_previous: bool) -> list[dict[str, Any]]:
    """One pass over the range's item events, grouped by the integer item key (no join per
    event): per item its category and the additive totals of _TOTAL_FIELDS. `events`,
    `purchases` etc. count the range only; with_previous the scan starts at the previous
    period of equal length and `previous_views` counts its views (else it is 0). The
    distinct viewers and purchasers are not additive and come from _distinct_users."""
    event_table = connection.ops.quote_name(Event._meta.db_table)
    item_table = connection.ops.quote_name(Item._meta.db_table)
    start = connection.ops.adapt_datetimefield_value(date_range.start_at)
    since = date_range.previous().start_at if with_previous else date_range.start_at
    rated = _sql_in(RATED_EVENT_TYPES)
    current = "e.timestamp >= %s"
    # (SQL, parameters) per total; FILTER works on PostgreSQL and on SQLite >= 3.30.
    totals: list[tuple[str, list[Any]]] = [
        (f"COUNT(*) FILTER (WHERE {current})", [start]),
        (f"COUNT(*) FILTER (WHERE e.type = %s AND {current})", ["view", start]),
        ("COUNT(*) FILTER (WHERE e.type = %s AND e.timestamp < %s)", ["view", start]),
        (f"COUNT(*) FILTER (WHERE e.type = %s AND {current})", ["purchase", start]),
        (f"SUM(e.value) FILTER (WHERE e.type = %s AND {current})", ["purchase", start]),
        (f"SUM(e.value) FILTER (WHERE e.type IN ({rated}) AND {current})",
         [*RATED_EVENT_TYPES, start]),
        (f"COUNT(e.value) FILTER (WHERE e.type IN ({rated}) AND {current})",
         [*RATED_EVENT_TYPES, start]),
        *[(f"COUNT(*) FILTER (WHERE e.sentiment_label = %s AND {current})", [label, start])
          for label in SENTIMENT_LABELS],
    ]
    params: list[Any] = [value for _, values in totals for value in values]
    filters = ["e.item_id IS NOT NULL", "e.timestamp >= %s", "e.timestamp < %s"]
    params += [connection.ops.adapt_datetimefield_value(since),
               connection.ops.adapt_datetimefield_value(date_range.end_before)]
    if category:
        filters.append(f"e.item_id IN (SELECT id FROM {item_table} WHERE category = %s)")
        params.append(category)
    columns = ", ".join(f"{sql} AS {name}" for (sql, _), name in zip(totals, _TOTAL_FIELDS))
    sql = (f"SELECT t.*, i.category FROM (SELECT e.item_id AS item, {columns} "
           f"FROM {event_table} e WHERE {' AND '.join(filters)} GROUP BY e.item_id) t "
           f"JOIN {item_table} i ON i.id = t.item")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _distinct_users(*, date_range: DateRange, category: str | None, by_category: bool,
                    item_pks: list[int] | None = None) -> dict[Any, tuple[int, int]]:
    """Distinct viewers and purchasers in the range per item pk (only of item_pks when
    given) or per category. Reads only view and purchase events (the (type, timestamp)
    index). Per category the events are grouped by the category's integer rank, not its
    name: sorting integers costs less than sorting collated text. Users are counted as
    persons, as in the funnel: an anonymous id linked to a signed-in user is that user."""
    event_table = connection.ops.quote_name(Event._meta.db_table)
    item_table = connection.ops.quote_name(Item._meta.db_table)
    link_join = (f"LEFT JOIN {connection.ops.quote_name(IdentityLink._meta.db_table)} l "
                 "ON l.alias_id = e.user_id")
    params: list[Any] = ["view", "purchase", "view", "purchase",
                         connection.ops.adapt_datetimefield_value(date_range.start_at),
                         connection.ops.adapt_datetimefield_value(date_range.end_before)]
    filters = ["e.type IN (%s, %s)", "e.timestamp >= %s", "e.timestamp < %s",
               "e.item_id IS NOT NULL"]
    if category:
        filters.append(f"e.item_id IN (SELECT id FROM {item_table} WHERE category = %s)")
        params.append(category)
    if item_pks is not None:
        if not item_pks:
            return {}
        filters.append(f"e.item_id IN ({_sql_in(item_pks)})")
        params += item_pks
    person = "COALESCE(l.person_id, e.user_id)"
    counts = (f"COUNT(DISTINCT {person}) FILTER (WHERE e.type = %s) AS viewers, "
              f"COUNT(DISTINCT {person}) FILTER (WHERE e.type = %s) AS purchasers")
    where = " AND ".join(filters)
    if by_category:
        ranks = "DENSE_RANK() OVER (ORDER BY category) AS category_rank"
        sql = (f"SELECT names.category, users.viewers, users.purchasers FROM ("
               f"SELECT r.category_rank, {counts} FROM {event_table} e {link_join} "
               f"JOIN (SELECT id, {ranks} FROM {item_table}) r ON r.id = e.item_id "
               f"WHERE {where} GROUP BY r.category_rank) users "
               f"JOIN (SELECT DISTINCT category, {ranks} FROM {item_table}) names "
               f"ON names.category_rank = users.category_rank")
    else:
        sql = (f"SELECT e.item_id, {counts} FROM {event_table} e {link_join} WHERE {where} "
               "GROUP BY e.item_id")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {row[0]: (row[1], row[2]) for row in cursor.fetchall()}


def _performance_row(totals: dict[str, Any], users: tuple[int, int]) -> dict[str, Any]:
    """The aggregated row item_performance and category_performance return, before
    _with_shares: unrounded revenue and average rating, as the ordering uses them."""
    viewers, purchasers = users
    reviews = sum(totals[label] or 0 for label in SENTIMENT_LABELS)
    return {
        "views": totals["views"], "viewers": viewers, "purchases": totals["purchases"],
        "purchasers": purchasers, "revenue": totals["revenue"] or 0.0,
        "average_rating": (totals["rating_sum"] / totals["ratings"]
                           if totals["ratings"] else None),
        "reviews": reviews, **{label: totals[label] or 0 for label in SENTIMENT_LABELS},
        "conversion": _ratio(purchasers, viewers),
    }


def _order_key(order_by: ItemOrder, totals: dict[str, Any], tie: Any) -> tuple:
    """Descending by order_by (missing values last), then by views, then by `tie`."""
    value = totals[order_by]
    return (value is None, -(value or 0), -totals["views"], tie)


def _top_items(*, totals: list[dict[str, Any]], date_range: DateRange, category: str | None,
               order_by: ItemOrder, limit: int) -> list[dict[str, Any]]:
    current = {row["item"]: row for row in totals if row["events"]}
    users: dict[Any, tuple[int, int]] = {}
    if order_by == "conversion":
        # Conversion needs every item's distinct counts before ranking.
        users = _distinct_users(date_range=date_range, category=category, by_category=False)
    # The other orderings need only the additive totals, so the distinct counts are read
    # for the top rows alone.
    rows = {pk: _performance_row(row, users.get(pk, (0, 0))) for pk, row in current.items()}
    top = sorted(rows, key=lambda pk: _order_key(order_by, rows[pk], pk))[:limit]
    if order_by != "conversion":
        users = _distinct_users(date_range=date_range, category=category, by_category=False,
                                item_pks=top)
        rows = {pk: _performance_row(current[pk], users.get(pk, (0, 0))) for pk in top}
    details = {item.pk: item for item in Item.objects.filter(pk__in=top)
               .only("item_id", "title", "category")}
    return [_with_shares({**rows[pk], "item_id": details[pk].item_id,
                          "title": details[pk].title, "category": details[pk].category})
            for pk in top]


def _top_categories(*, totals: list[dict[str, Any]], date_range: DateRange,
                    category: str | None, order_by: ItemOrder, limit: int
                    ) -> list[dict[str, Any]]:
    """Category totals are sums of their items' totals; distinct users are counted per
    category (a user viewing two items of a category counts once)."""
    sums: dict[str, dict[str, Any]] = {}
    for row in totals:
        if not row["events"]:
            continue
        summed = sums.setdefault(row["category"], dict.fromkeys(_TOTAL_FIELDS))
        for field in _TOTAL_FIELDS:
            if row[field] is not None:
                summed[field] = (summed[field] or 0) + row[field]
    users = _distinct_users(date_range=date_range, category=category, by_category=True)
    rows = {name: _performance_row(summed, users.get(name, (0, 0)))
            for name, summed in sums.items()}
    top = sorted(rows, key=lambda name: _order_key(order_by, rows[name], name))[:limit]
    return [_with_shares({"category": name, **rows[name]}) for name in top]


def _trending(*, totals: list[dict[str, Any]], limit: int, min_views: int
              ) -> list[dict[str, Any]]:
    """Growth is (current - previous) / previous views, or the current count when there
    were none before; ties on growth and views are broken by the external item id."""
    candidates = []
    for row in totals:
        current_views, previous_views = row["views"], row["previous_views"]
        if current_views + previous_views and current_views >= min_views:
            growth = float(current_views - previous_views) / float(max(previous_views, 1))
            candidates.append((growth, current_views, previous_views, row["item"]))
    candidates.sort(key=lambda candidate: (-candidate[0], -candidate[1]))
    rows = candidates[:limit]
    if len(rows) == limit and rows:
        # Keep every candidate tied with the last kept one: the external ids decide.
        last_growth, last_views = rows[-1][0], rows[-1][1]
        rows = [candidate for candidate in candidates
                if candidate[0] > last_growth
                or (candidate[0] == last_growth and candidate[1] >= last_views)]
    details = {item.pk: item for item in Item.objects.filter(pk__in=[row[3] for row in rows])
               .only("item_id", "title", "category")}
    result = []
    for growth, current_views, previous_views, pk in rows:
        item = details[pk]
        result.append({"item_id": item.item_id, "title": item.title, "category": item.category,
                       "current_views": current_views, "previous_views": previous_views,
                       "growth": round(growth, 4)})
    result.sort(key=lambda row: (-row["growth"], -row["current_views"], row["item_id"]))
    return result[:limit]


def item_report(*, date_range: DateRange, category: str | None = None,
                order_by: ItemOrder = "views", limit: int = 20, trending_limit: int = 10,
                min_views: int = 3) -> dict[str, list[dict[str, Any]]]:
    """item_performance, category_performance and trending_items from one shared pass
    over the events of the range and the previous period (plus the distinct-user counts)."""
    totals = _item_totals(date_range=date_range, category=category, with_previous=True)
    scope = {"totals": totals, "date_range": date_range, "category": category,
             "order_by": order_by, "limit": limit}
    return {"items": _top_items(**scope), "categories": _top_categories(**scope),
            "trending": _trending(totals=totals, limit=trending_limit, min_views=min_views)}


def item_performance(*, date_range: DateRange, category: str | None = None,
                     order_by: ItemOrder = "views", limit: int = 20) -> list[dict[str, Any]]:
    """Top items: views, unique viewers, purchases, conversion (purchasers / viewers),
    revenue, average rating and review sentiment shares."""
    totals = _item_totals(date_range=date_range, category=category, with_previous=False)
    return _top_items(totals=totals, date_range=date_range, category=category,
                      order_by=order_by, limit=limit)


def category_performance(*, date_range: DateRange, category: str | None = None,
                         order_by: ItemOrder = "views", limit: int = 20) -> list[dict[str, Any]]:
    totals = _item_totals(date_range=date_range, category=category, with_previous=False)
    return _top_categories(totals=totals, date_range=date_range, category=category,
                           order_by=order_by, limit=limit)


def trending_items(*, date_range: DateRange, category: str | None = None, limit: int = 10,
                   min_views: int = 3) -> list[dict[str, Any]]:
    """Items whose views grew most against the previous period of equal length; growth is
    (current - previous) / previous, or the current count when there were no views before."""
    totals = _item_totals(date_range=date_range, category=category, with_previous=True)
    return _trending(totals=totals, limit=limit, min_views=min_views)


# Sentiment ------------------------------------------------------------------------------


def sentiment_trend(*, date_range: DateRange, category: str | None = None,
                    period: Period = "day") -> list[dict[str, Any]]:
    """Per day (or week) the number of scored reviews and the share of each label."""
    counts: dict[date, dict[str, int]] = defaultdict(dict)
    # exclude(sentiment_label="") repeats the predicate of a partial index on scored events
    # so PostgreSQL can use it; the label filter alone would not match it.
    for row in (_events(date_range=date_range, category=category)
                .exclude(sentiment_label="").filter(sentiment_label__in=SENTIMENT_LABELS)
                .annotate(bucket=Trunc("timestamp", period, output_field=DateField()))
                .values("bucket", "sentiment_label").annotate(reviews=Count("id"))):
        counts[row["bucket"]][row["sentiment_label"]] = row["reviews"]
    buckets = date_range.dates() if period == "day" else sorted(counts)
    trend = []
    for bucket in buckets:
        by_label = counts.get(bucket, {})
        total = sum(by_label.values())
        trend.append({"date": bucket, "reviews": total,
                      **{label: by_label.get(label, 0) for label in SENTIMENT_LABELS},
                      "shares": {label: _ratio(by_label.get(label, 0), total)
                                 for label in SENTIMENT_LABELS}})
    return trend


def sentiment_by_item(*, date_range: DateRange, category: str | None = None,
                      item_ids: list[str] | None = None, min_reviews: int = 1,
                      order: Literal["negative_share", "reviews"] = "reviews",
                      limit: int | None = None) -> list[dict[str, Any]]:
    """Per item: scored reviews, count and share of each sentiment label in the range.
    `item_ids` are external item ids; `order="negative_share"` lists the most negative first."""
    rows = (_events(date_range=date_range, category=category)
            .exclude(sentiment_label="")
            .filter(sentiment_label__in=SENTIMENT_LABELS, item__isnull=False))
    if item_ids is not None:
        rows = rows.filter(item__item_id__in=item_ids)
    rows = (rows.values(*ITEM_FIELDS).annotate(**_sentiment_annotations())
            .filter(reviews__gte=min_reviews)
            .annotate(negative_share=Cast("negative", FloatField())
                      / Cast("reviews", FloatField())))
    if order == "negative_share":
        rows = rows.order_by("-negative_share", "-reviews", "item__item_id")
    else:
        rows = rows.order_by("-reviews", "item__item_id")
    if limit is not None:
        rows = rows[:limit]
    return [_with_shares(row) for row in rows]


def sentiment_by_category(*, date_range: DateRange, categories: list[str] | None = None
                          ) -> list[dict[str, Any]]:
    """Per item category: scored reviews, count and share of each sentiment label."""
    rows = (_events(date_range=date_range)
            .exclude(sentiment_label="")
            .filter(sentiment_label__in=SENTIMENT_LABELS, item__isnull=False))
    if categories is not None:
        rows = rows.filter(item__category__in=categories)
    rows = (rows.values(category=F("item__category")).annotate(**_sentiment_annotations())
            .order_by("-reviews", "category"))
    return [_with_shares(row) for row in rows]


def negative_reviews_by_item(*, item_ids: list[str], date_range: DateRange | None = None,
                             per_item: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The most negative recent reviews of each item (external ids): negative-labelled events
    ordered by sentiment score, lowest first, newer first among equal scores."""
    reviews = Event.objects.filter(item__item_id__in=item_ids, sentiment_label="negative")
    if date_range is not None:
        reviews = reviews.filter(timestamp__gte=date_range.start_at,
                                 timestamp__lt=date_range.end_before)
    ranked = (reviews.annotate(
        rank=Window(RowNumber(), partition_by=[F("item_id")],
                    order_by=[F("sentiment_score").asc(nulls_last=True),
                              F("timestamp").desc(), F("id").desc()]))
        .filter(rank__lte=per_item)
        .values("item__item_id", "user__user_id", "timestamp", "value", "text",
                "sentiment_score")
        .order_by("item__item_id", "rank"))
    result: dict[str, list[dict[str, Any]]] = {item_id: [] for item_id in item_ids}
    for row in ranked:
        result[row["item__item_id"]].append({
            "user_id": row["user__user_id"], "timestamp": row["timestamp"],
            "rating": row["value"], "text": row["text"],
            "sentiment_score": row["sentiment_score"]})
    return result


def sentiment_summary(*, date_range: DateRange, category: str | None = None,
                      period: Period = "day", limit: int = 10,
                      min_reviews: int = 3) -> dict[str, Any]:
    trend = sentiment_trend(date_range=date_range, category=category, period=period)
    totals = {label: sum(row[label] for row in trend) for label in SENTIMENT_LABELS}
    reviews = sum(totals.values())
    worst = sentiment_by_item(date_range=date_range, category=category,
                              min_reviews=min_reviews, order="negative_share", limit=limit)
    worst_reviews = negative_reviews_by_item(item_ids=[row["item_id"] for row in worst],
                                             date_range=date_range)
    categories = sentiment_by_category(date_range=date_range,
                                       categories=[category] if category else None)
    return {
        "reviews": reviews,
        **totals,
        "shares": {label: _ratio(totals[label], reviews) for label in SENTIMENT_LABELS},
        "trend": trend,
        "categories": categories,
        "most_negative_items": [{**row, "worst_reviews": worst_reviews[row["item_id"]]}
                                for row in worst],
    }


# Recommendations ------------------------------------------------------------------------


def _recommendation_rows(*, date_range: DateRange, category: str | None,
                         group_by: str) -> list[dict[str, Any]]:
    """Counts impressions per group, then the few events carrying a rec_id (found through
    the partial rec_id index) per group of the impression they name."""
    impressions = Impression.objects.filter(created_at__gte=date_range.start_at,
                                            created_at__lt=date_range.end_before)
    shown = (impressions.values(group_by).annotate(impressions=Count("id"))
             .order_by("-impressions", group_by))
    attributed = Event.objects.filter(rec_id__isnull=False, type__in=("click", "purchase"),
                                      rec_id__in=impressions.values("rec_id"))
    if category:
        attributed = attributed.filter(item__category=category)
    impression_group = Impression.objects.filter(rec_id=OuterRef("rec_id")).values(group_by)
    outcomes = {
        row["group"]: row for row in attributed
        .annotate(group=Subquery(impression_group[:1]))
        .values("group")
        .annotate(clicks=Count("rec_id", distinct=True, filter=Q(type="click")),
                  purchases=Count("rec_id", distinct=True, filter=Q(type="purchase")),
                  revenue=Coalesce(Sum("value", filter=Q(type="purchase")), 0.0))
    }
    rows = []
    for row in shown:
        outcome = outcomes.get(row[group_by], {"clicks": 0, "purchases": 0, "revenue": 0.0})
        rows.append({"impressions": row["impressions"], "clicks": outcome["clicks"],
                     "purchases": outcome["purchases"], "revenue": round(outcome["revenue"], 2),
                     "ctr": _ratio(outcome["clicks"], row["impressions"]),
                     "purchase_rate": _ratio(outcome["purchases"], row["impressions"]),
                     "key": row[group_by]})
    return rows


def proportion_difference(*, hits_a: int, total_a: int, hits_b: int,
                          total_b: int) -> dict[str, Any]:
    """Rate of A minus rate of B (CTR, purchase rate) with a 95% confidence interval from
    the two-proportion normal approximation (unpooled standard error)."""
    if not total_a or not total_b:
        return {"difference": None, "ci_low": None, "ci_high": None, "significant": None}
    rate_a = hits_a / total_a
    rate_b = hits_b / total_b
    difference = rate_a - rate_b
    standard_error = math.sqrt(rate_a * (1 - rate_a) / total_a
                               + rate_b * (1 - rate_b) / total_b)
    margin = Z_95 * standard_error
    return {"difference": difference, "ci_low": difference - margin,
            "ci_high": difference + margin,
            "significant": bool(standard_error) and abs(difference) > margin}


def recommendation_performance(*, date_range: DateRange, category: str | None = None,
                               compare: tuple[str, str] | None = None) -> dict[str, Any]:
    """Impressions (recommendation responses) in the range, and how many of them led to a
    click or a purchase carrying their rec_id (at any later time), per model version and per
    strategy. CTR = impressions with a click / impressions. With a category only clicks and
    purchases of its items count. `compare` names two model versions; by default the two
    with most impressions are compared."""
    by_version = [{"model_version": row.pop("key"), **row} for row in _recommendation_rows(
        date_range=date_range, category=category, group_by="model_version__name")]
    by_strategy = [{"strategy": row.pop("key"), **row} for row in _recommendation_rows(
        date_range=date_range, category=category, group_by="strategy")]
    versions = {row["model_version"]: row for row in by_version if row["model_version"]}
    if compare is None and len(versions) >= 2:
        compare = tuple(list(versions)[:2])
    comparison = None
    if compare is not None:
        empty = {"impressions": 0, "clicks": 0, "ctr": None, "purchases": 0,
                 "purchase_rate": None}
        row_a, row_b = versions.get(compare[0], empty), versions.get(compare[1], empty)
        comparison = {
            "version_a": compare[0], "version_b": compare[1],
            "ctr_a": row_a["ctr"], "ctr_b": row_b["ctr"],
            "impressions_a": row_a["impressions"], "impressions_b": row_b["impressions"],
            "confidence": 0.95,
            # The CTR difference at the top level; the purchase rate's in its own key.
            **proportion_difference(hits_a=row_a["clicks"], total_a=row_a["impressions"],
                                    hits_b=row_b["clicks"], total_b=row_b["impressions"]),
            "purchase_rate_a": row_a["purchase_rate"], "purchase_rate_b": row_b["purchase_rate"],
            "purchase_rate_difference": proportion_difference(
                hits_a=row_a["purchases"], total_a=row_a["impressions"],
                hits_b=row_b["purchases"], total_b=row_b["impressions"]),
        }
    totals = {key: sum(row[key] for row in by_strategy)
              for key in ("impressions", "clicks", "purchases")}
    return {
        **totals,
        "revenue": round(sum(row["revenue"] for row in by_strategy), 2),
        "ctr": _ratio(totals["clicks"], totals["impressions"]),
        "purchase_rate": _ratio(totals["purchases"], totals["impressions"]),
        "by_model_version": by_version,
        "by_strategy": by_strategy,
        "comparison": comparison,
    }


def model_version_names() -> set[str]:
    return set(ModelVersion.objects.values_list("name", flat=True))
