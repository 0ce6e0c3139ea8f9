"""Where the insights read activity from: the rollups (analytics/models.py) plus the events
received since their watermark, or the raw events alone. Both give identical answers
(tests/analytics/insights/test_sources.py); the rollups make the cost grow with the days
and persons shown instead of the events behind them.

Relations, as SQL over which the insights aggregate:
- ``person_days``: (day, person), a row (or several) for every person active on a day;
- ``daily_events``: (day, event_type, category, events, value_sum, value_events), summable;
- ``property_days``: (day, type, bucket, events, value_sum, value_events), summable, per
  value of one property key, optionally of one category's items (rollups only where it is
  one of ANALYTICS_ROLLUP_PROPERTIES);
- ``typed_person_days`` (rollups only): (day, category, person, type_bits), persons active
  on a day with the TYPE_BITS of their events' types, for unique persons of chosen types;
- ``category_shoppers`` (rollups only): (category, person, views, purchases), the persons
  who viewed or bought the category's items on a day of the range;
- ``first_occurrences`` (rollups only): (person, category, first_at), times of persons'
  events of a standard type in the range whose earliest per person is their first, for a
  funnel's first step;
- ``day_paths`` (rollups only): (person, day, path), each rolled-up user-day's event types
  in time order, which persons' paths are joined from.
- ``person_days_split`` (rollups only, every category): person_days as the persons
  counted by their rows' previous days (no grouping by person) and the rest;
  ``first_occurrences_split`` the same for first_occurrences.

With rollups, each (but ``day_paths``, which returns the raw tail apart for its caller to
read per person) is the rollup rows of the range UNION ALL the same figures computed
from the events received at or after the watermark (a few minutes' worth when the
schedule runs), so a dashboard is exact whatever the rollups' state, with one exception:
until the updates after an item's category change have rebuilt its days (5 days per
update), category filters and breakdowns count its earlier events under the old category.
Late events (old timestamps received now) are in the tail until the next update adds them
to their day.

What is not rolled up, and why, is said where it is read: funnels after their first step
(conversion windows across arbitrary steps), items (per-item totals and distinct persons
per item: an item-day rollup was measured twice, 5.8M rows at 10M events: it left the
120-day page as slow as one pass over the events and took the 30-day page from 2.9 to
2.2-2.5 s, for about 1 GB more (benchmarks/README.md, session 22); they read the
events' covering (item, timestamp) index),
sentiment (reviews only, scored after they arrive),
recommendations (impressions), property filters and breakdowns on a key the rollups do not
count (and of unique persons, or a filter with a breakdown by a property), and
unique persons of chosen event types (trends) when any of them has no bit in TYPE_BITS
read raw events.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.db.models import CharField, Count, F, Q, QuerySet, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, NullIf, TruncDate

from analytics.insights.common import DateRange, events_in_range
from analytics.models import (
    TYPE_BITS,
    DailyEventRollup,
    DailyPropertyRollup,
    RollupState,
    UserDayActivity,
    UserDayRollup,
    first_at_field,
)
from analytics.services import (
    NONE_VALUE,
    as_date,
    daily_event_rows,
    date_param,
    property_day_rows,
    property_text,
    type_bit,
)
from ingestion.models import EndUser, Event, IdentityLink
from ingestion.selectors import person_key

_raw_only: ContextVar[bool] = ContextVar("analytics_raw_only", default=False)

Relation = tuple[str, list[Any]]
DAILY_COLUMNS = ("day", "event_type", "category", "events", "value_sum", "value_events")


@contextmanager
def raw_events_only() -> Iterator[None]:
    """Within it, insights ignore the rollups (the benchmark's raw path, exactness tests)."""
    token = _raw_only.set(True)
    try:
        yield
    finally:
        _raw_only.reset(token)


def rollup_watermark() -> datetime | None:
    """The watermark to read the rollups with, or None to read raw events: rollups off,
    never built, or cut into days in another time zone than today's setting."""
    if _raw_only.get() or not settings.ANALYTICS_USE_ROLLUPS:
        return None
    state = RollupState.objects.filter(pk=1).values_list("watermark", "time_zone").first()
    if state is None or state[1] != settings.TIME_ZONE:
        return None
    return state[0]


def _sql(queryset: QuerySet) -> Relation:
    sql, params = queryset.query.sql_with_params()
    return sql, list(params)


def _union(*relations: Relation) -> Relation:
    return (" UNION ALL ".join(f"SELECT * FROM ({sql}) AS part{n}"
                               for n, (sql, _) in enumerate(relations)),
            [param for _, params in relations for param in params])


def person_days(*, date_range: DateRange, category: str | None = None) -> Relation:
    """SQL with columns (day, person): persons active on each day of the range (in the
    category); a (day, person) pair may repeat."""
    events = events_in_range(date_range=date_range, category=category)
    watermark = rollup_watermark()

    def from_events(selected: QuerySet[Event]) -> Relation:
        return _sql(selected.annotate(day=TruncDate("timestamp"), person=person_key())
                    .values_list("day", "person").distinct())

    if watermark is None:
        return from_events(events)
    if category:
        rolled = UserDayRollup.objects.filter(category=category)
    else:
        rolled = UserDayActivity.objects.all()
    rolled = rolled.filter(day__gte=date_range.start, day__lte=date_range.end)
    # The rollups carry the user's identity link as events do, so persons key alike.
    rolled = rolled.annotate(person=person_key()).values_list("day", "person")
    return _union(_sql(rolled), from_events(events.filter(received_at__gte=watermark)))


class _OwnPersons(NamedTuple):
    """The rolled-up days of a range (UserDayActivity rows) split by user: `others`, SQL
    with a column user_id (with `others_params`), names the users who are not persons of
    their own (either side of an identity link) or have events in the raw `tail`; every
    other user is a person of their own with one row a day, linked to their day before."""

    in_range: QuerySet[UserDayActivity]
    tail: QuerySet[Event]
    others: str
    others_params: list[Any]

    def own_rows(self, *columns: str) -> Relation:
        """SQL with the columns of the own persons' rows (user_id as the person)."""
        own_sql, own_params = _sql(self.in_range.values_list(*columns))
        return (f"SELECT * FROM ({own_sql}) AS own WHERE NOT EXISTS (SELECT 1 FROM "
                f"({self.others}) AS other WHERE other.user_id = own.user_id)",
                [*own_params, *self.others_params])

    def others_rows(self) -> QuerySet[UserDayActivity]:
        return self.in_range.filter(user_id__in=RawSQL(self.others, self.others_params))


def _own_persons(*, date_range: DateRange) -> _OwnPersons | None:
    watermark = rollup_watermark()
    if watermark is None:
        return None
    tail = events_in_range(date_range=date_range).filter(received_at__gte=watermark)
    tail_users, tail_params = _sql(tail.values_list("user_id"))
    links = connection.ops.quote_name(IdentityLink._meta.db_table)
    # Repeats are harmless to EXISTS and IN, and deduplicating every link costs more.
    others = (f"SELECT alias_id AS user_id FROM {links} UNION ALL SELECT person_id "
              f"FROM {links} UNION ALL SELECT user_id FROM ({tail_users}) AS tail")
    in_range = UserDayActivity.objects.filter(day__gte=date_range.start,
                                              day__lte=date_range.end)
    return _OwnPersons(in_range=in_range, tail=tail, others=others, others_params=tail_params)


def person_days_split(*, date_range: DateRange) -> tuple[Relation, Relation] | None:
    """Rollups only, over every category: person_days in two parts that share no person.
    None where the rollups are not built.

    - (day, person, previous_day): the rolled-up days of users who are persons of their
      own (neither side of an identity link) and have no event in the raw tail, one row a
      day, with the person's latest earlier day (UserDayActivity.previous_day). Persons
      active since a day are the rows since then whose previous day is earlier (or none):
      counted, not grouped by person;
    - (day, person): person_days of everyone else, the rolled-up days of linked users and
      of users with events in the tail, and the tail."""
    split = _own_persons(date_range=date_range)
    if split is None:
        return None
    own_sql, own_params = split.own_rows("day", "user_id", "previous_day")
    own = (f"SELECT day, user_id AS person, previous_day FROM ({own_sql}) AS own",
           own_params)
    rest = _union(
        _sql(split.others_rows().annotate(person=person_key()).values_list("day", "person")),
        _sql(split.tail.annotate(day=TruncDate("timestamp"), person=person_key())
             .values_list("day", "person").distinct()))
    return own, rest


def first_occurrences_split(*, date_range: DateRange,
                            event_type: str) -> tuple[Relation, Relation] | None:
    """Rollups only, over every category: first_occurrences in two parts that share no
    person, for a funnel's first step. None where first_occurrences would be.

    - (person, first_at): one row per person of their own (person_days_split's first part)
      with an event of the type in the range, its time: their first row in the range (the
      one whose previous day is before it) holds it where it has the type, and only the
      persons whose first row has not are grouped, over their later rows. At 10M events
      over 120 days, grouping all of their 0.8M user-days by person for the funnel's views
      took 350 ms against 270 ms for this (benchmarks/README.md, session 29). Like
      person_days_split, it counts on every row's link: a row a worker on the code before
      migration 0013 added without one reads as a first row until the hourly check links
      it;
    - (person, category, first_at): first_occurrences of everyone else, "" as category."""
    if event_type not in TYPE_BITS:
        return None
    split = _own_persons(date_range=date_range)
    if split is None:
        return None
    field = first_at_field(event_type)
    own_sql, own_params = split.own_rows("user_id", "previous_day", field)
    is_first_row = "(own.previous_day IS NULL OR own.previous_day < %s)"
    start = date_param(date_range.start)
    # The own rows three times over: PostgreSQL plans each pass over the table, where a
    # CTE read more than once would be written out whole first.
    own = (f"SELECT own.user_id AS person, own.{field} AS first_at FROM ({own_sql}) AS own "
           f"WHERE {is_first_row} AND own.{field} IS NOT NULL UNION ALL "
           f"SELECT own.user_id, MIN(own.{field}) FROM ({own_sql}) AS own "
           f"WHERE own.{field} IS NOT NULL AND own.user_id IN (SELECT own.user_id "
           f"FROM ({own_sql}) AS own WHERE {is_first_row} AND own.{field} IS NULL) "
           "GROUP BY own.user_id",
           [*own_params, start, *own_params, *own_params, start])
    return own, _first_occurrence_rows(split.others_rows().annotate(category=Value("")),
                                       split.tail, event_type=event_type, per_category=False)


def daily_events(*, date_range: DateRange, category: str | None = None,
                 event_types: list[str] | None = None) -> Relation:
    """SQL with columns (day, event_type, category, events, value_sum, value_events): per
    day, type and item category ("" for none), possibly split over several rows."""
    events = events_in_range(date_range=date_range, category=category)
    if event_types is not None:
        events = events.filter(type__in=event_types)
    watermark = rollup_watermark()

    def from_events(selected: QuerySet[Event]) -> Relation:
        return _sql(daily_event_rows(selected).values_list(*DAILY_COLUMNS))

    if watermark is None:
        return from_events(events)
    rolled = DailyEventRollup.objects.filter(day__gte=date_range.start, day__lte=date_range.end)
    if category:
        rolled = rolled.filter(category=category)
    if event_types is not None:
        rolled = rolled.filter(event_type__in=event_types)
    rolled = rolled.values_list(*DAILY_COLUMNS)
    return _union(_sql(rolled), from_events(events.filter(received_at__gte=watermark)))


def property_days(*, date_range: DateRange, event_types: list[str], key: str,
                  value: str | None = None, category: str | None = None,
                  by_category: bool = False) -> Relation | None:
    """SQL with columns (day, type, bucket, events, value_sum, value_events): the events of
    the types (on items of the category) per day, type and value of property `key` as a
    trends breakdown buckets it (analytics.services.property_bucket), possibly split over
    several rows; with `value`, only the events whose property is that value as text, and
    with ``by_category`` as well, those events bucketed by their item's category instead
    (NONE_VALUE for none, as a category breakdown names it), from the rows per category
    (``by_category`` without `value` would be a category breakdown, which daily_events
    serves). Until the updates after an item's category change have rebuilt its days, the
    category counts the item's rolled-up events under its old one, as daily_events does.
    None where the rollups cannot tell: they do not count the key (not built, or the key is
    not one of the ANALYTICS_ROLLUP_PROPERTIES the last update counted), or `value` is
    NONE_VALUE, the bucket of events without the key as well as of those with that text. The
    caller then reads events."""
    if value == NONE_VALUE:
        return None
    watermark = rollup_watermark()
    if watermark is None or key not in (RollupState.objects.filter(pk=1)
                                        .values_list("property_keys", flat=True).first() or []):
        return None
    columns = ("day", "type", "bucket", "events", "value_sum", "value_events")
    rolled = DailyPropertyRollup.objects.filter(
        key=key, event_type__in=event_types, day__gte=date_range.start, day__lte=date_range.end)
    if category:
        rolled = rolled.filter(every_category=False, category=category)
    else:
        rolled = rolled.filter(every_category=not by_category)
    tail = (events_in_range(date_range=date_range, category=category)
            .filter(received_at__gte=watermark, type__in=event_types))
    if value is not None:
        rolled = rolled.filter(value=value)
        tail = tail.alias(filter_value=property_text(key)).filter(filter_value=value)
    tail_rows = property_day_rows(tail, key=key, by_category=by_category)
    if not by_category:
        rolled = rolled.annotate(type=F("event_type"), bucket=F("value"))
        return _union(_sql(rolled.values_list(*columns)), _sql(tail_rows.values_list(*columns)))
    rolled = rolled.annotate(type=F("event_type"), bucket=Coalesce(
        NullIf("category", Value("")), Value(NONE_VALUE), output_field=CharField()))
    # The tail's rows name the property's value "bucket" already: the category is renamed
    # in SQL around them.
    tail_sql, tail_params = _sql(tail_rows.values_list(
        "day", "type", "category", "events", "value_sum", "value_events"))
    return _union(_sql(rolled.values_list(*columns)), (
        "SELECT day, type, CASE WHEN category = '' THEN %s ELSE category END AS bucket, "
        f"events, value_sum, value_events FROM ({tail_sql}) AS tail",
        [NONE_VALUE, *tail_params]))


def _user_days(*, category: str | None, per_category: bool) -> QuerySet:
    """The per-user rollup rows to read, with a ``category`` column: per category (of the
    filter, if any), or a user's day over all categories, which has fewer rows, with ""."""
    if not per_category:
        return UserDayActivity.objects.annotate(category=Value(""))
    rolled = UserDayRollup.objects.all()
    return rolled.filter(category=category) if category else rolled


def typed_person_days(*, date_range: DateRange, event_types: list[str],
                      category: str | None = None, by_category: bool = False
                      ) -> Relation | None:
    """SQL with columns (day, category, person, type_bits): persons active on each day of
    the range (in the category) with events of the types, and the TYPE_BITS of those
    types (a (day, category, person) may repeat; test the bits of the type counted).
    ``category`` is the item's ("" for none) with ``by_category`` or a category filter,
    else "" throughout. None where a type has no bit (or none is given) or the rollups are
    not built: the caller counts events."""
    if not event_types or not set(event_types) <= TYPE_BITS.keys():
        return None
    watermark = rollup_watermark()
    if watermark is None:
        return None
    mask = sum(TYPE_BITS[event_type] for event_type in set(event_types))
    per_category = by_category or bool(category)
    rolled = (_user_days(category=category, per_category=per_category)
              .filter(day__gte=date_range.start, day__lte=date_range.end)
              .alias(chosen_bits=F("type_bits").bitand(mask)).exclude(chosen_bits=0)
              .annotate(person=person_key())
              .values_list("day", "category", "person", "type_bits"))
    tail = (events_in_range(date_range=date_range, category=category)
            .filter(received_at__gte=watermark, type__in=event_types)
            .annotate(day=TruncDate("timestamp"),
                      category=(Coalesce("item__category", Value("")) if per_category
                                else Value("")),
                      person=person_key(), type_bits=type_bit())
            .values_list("day", "category", "person", "type_bits"))
    return _union(_sql(rolled), _sql(tail))


def first_occurrences(*, date_range: DateRange, event_type: str, category: str | None = None,
                      by_category: bool = False) -> Relation | None:
    """SQL with columns (person, category, first_at): the times of persons' events of the
    type in the range (with ``by_category`` or a category filter: on an item of the
    category, which the column names; else "" throughout), each person's earliest
    ``first_at`` being their first such event in the range: a rolled-up user-day's first
    one, and every event of the raw tail (a (person, category) pair repeats). None where
    the type has no bit in TYPE_BITS or the rollups are not built: the caller reads raw
    events."""
    if event_type not in TYPE_BITS:
        return None
    watermark = rollup_watermark()
    if watermark is None:
        return None
    per_category = by_category or bool(category)
    return _first_occurrence_rows(
        _user_days(category=category, per_category=per_category)
        .filter(day__gte=date_range.start, day__lte=date_range.end),
        events_in_range(date_range=date_range, category=category)
        .filter(received_at__gte=watermark),
        event_type=event_type, per_category=per_category)


def _first_occurrence_rows(rolled: QuerySet, tail: QuerySet[Event], *, event_type: str,
                           per_category: bool) -> Relation:
    """first_occurrences' columns from user-day rows with a ``category`` column (their first
    occurrence of the type) and raw tail events (each event of the type)."""
    field = first_at_field(event_type)
    rolled = (rolled.filter(**{f"{field}__isnull": False})
              .annotate(person=person_key(), first_at=F(field))
              .values_list("person", "category", "first_at"))
    tail = tail.filter(type=event_type)
    if per_category:
        tail = tail.filter(item__isnull=False)
    tail = (tail.annotate(person=person_key(),
                          category=F("item__category") if per_category else Value(""),
                          first_at=F("timestamp"))
            .values_list("person", "category", "first_at"))
    return _union(_sql(rolled), _sql(tail))


def day_paths(*, date_range: DateRange,
              category: str | None = None) -> tuple[Relation, QuerySet[Event]] | None:
    """Rollups only: SQL with columns (person, day, path, user_id), the rolled-up user-days
    of the range (in the category) with their paths (DayPath; NULL where stale), and the
    range's events received since the watermark: the persons of those, of a stale row and
    of two users active on one day (an alias and its person, whose events interleave) have
    paths the caller reads from raw events. None where the rollups are not built."""
    watermark = rollup_watermark()
    if watermark is None:
        return None
    rolled = UserDayRollup.objects.filter(category=category) if category else \
        UserDayActivity.objects.all()
    rolled = (rolled.filter(day__gte=date_range.start, day__lte=date_range.end)
              .annotate(person=person_key()).values_list("person", "day", "path", "user_id"))
    tail = events_in_range(date_range=date_range, category=category).filter(
        received_at__gte=watermark)
    return _sql(rolled), tail


def category_shoppers(*, date_range: DateRange, category: str | None = None) -> Relation | None:
    """SQL with columns (category, person, views, purchases): persons who viewed or bought
    items of a category on a day of the range, with how many views and purchases (a
    (category, person) pair may repeat). None where the rollups are not built: the caller
    reads raw events its own way."""
    watermark = rollup_watermark()
    if watermark is None:
        return None
    rolled = UserDayRollup.objects.filter(day__gte=date_range.start, day__lte=date_range.end)
    if category:
        rolled = rolled.filter(category=category)
    rolled = (rolled.filter(Q(views__gt=0) | Q(purchases__gt=0)).annotate(person=person_key())
              .values_list("category", "person", "views", "purchases"))
    tail = (events_in_range(date_range=date_range, category=category)
            .filter(received_at__gte=watermark, item__isnull=False,
                    type__in=("view", "purchase"))
            .values(shop_category=F("item__category"), person=person_key())
            .annotate(views=Count("id", filter=Q(type="view")),
                      purchases=Count("id", filter=Q(type="purchase")))
            .values_list("shop_category", "person", "views", "purchases"))
    return _union(_sql(rolled), _sql(tail))


def first_seen_days(*, date_range: DateRange) -> Relation:
    """SQL with columns (person, first_day): persons (not aliases) first seen in the range."""
    return _sql(EndUser.objects.filter(first_seen__gte=date_range.start_at,
                                       first_seen__lt=date_range.end_before,
                                       identity_link__isnull=True)
                .annotate(first_day=TruncDate("first_seen")).values_list("id", "first_day"))


def periods(*, days: list[date], period_of: Callable[[date], date | int]) -> Relation:
    """SQL with columns (day, period): each day and its period, as period_of names it (the
    period's first day, or its number)."""
    values = ", ".join(["(%s, %s)"] * len(days))
    period_params = [period_of(day) for day in days]
    # A CTE names the columns the same way on SQLite and PostgreSQL.
    return (f"WITH periods(day, period) AS (VALUES {values}) SELECT day, period FROM periods",
            [value for day, period in zip(days, period_params)
             for value in (date_param(day),
                           date_param(period) if isinstance(period, date) else period)])


def fetch(sql: str, params: list[Any], *, sorted_groups: bool = False,
          hashed_joins: bool = False) -> list[tuple]:
    """The rows of the query. ``sorted_groups``: PostgreSQL groups by sorting, not hashing,
    for this query alone: where its groups outgrow ANALYTICS_WORK_MEM, hashing spills them
    to disk in batches and gives up the parallel plan, while one parallel sort feeds
    nested groupings (stickiness's persons' days in periods, 10M events over 120 days:
    1.6 s counting distinct days per group, 2.1 s hashed, 1.25 s sorted;
    benchmarks/README.md, session 21). ``hashed_joins``: no merge joins, for a query
    joining many persons to many events where the planner, estimating both sides well,
    prefers sorting both to hashing one (a funnel's later steps; session 29). The settings
    are SET LOCAL, as analytics_queries' are: they hold within that transaction (outside
    one PostgreSQL ignores them)."""
    settings_off = [name for name, wanted in (("enable_hashagg", sorted_groups),
                                              ("enable_mergejoin", hashed_joins)) if wanted]
    if connection.vendor != "postgresql":
        settings_off = []
    with connection.cursor() as cursor:
        for name in settings_off:
            cursor.execute(f"SET LOCAL {name} = off")
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        # A failed query needs no reset: its transaction rolls the settings back with it.
        for name in settings_off:
            cursor.execute(f"SET LOCAL {name} TO DEFAULT")
        return rows


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _month_start(day: date) -> date:
    return day.replace(day=1)


def period_of(interval: str | None) -> Callable[[date], date | None]:
    """The first day of a day's period: "day", "week" (from Monday) or "month"; None for
    one period spanning the whole range."""
    return {None: lambda day: None, "day": lambda day: day, "week": _week_start,
            "month": _month_start}[interval]
