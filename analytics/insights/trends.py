"""Trends: how often chosen events happened per day, week or month, optionally filtered
and broken down by a property or by item category, next to the period before."""

import calendar
from collections import Counter
from datetime import date, timedelta
from typing import Any, Literal

from django.db import connection
from django.db.models import Case, CharField, Count, DateField, QuerySet, Sum, Value, When
from django.db.models.functions import Coalesce, NullIf, Trunc

from analytics.insights import sources
from analytics.insights.common import DateRange, events_in_range
from analytics.models import TYPE_BITS
from analytics.services import NONE_VALUE, property_bucket, property_text
from ingestion.models import Event
from ingestion.selectors import person_key


Interval = Literal["day", "week", "month"]
Measure = Literal["count", "users", "sum", "average"]
INTERVALS = ("day", "week", "month")
MEASURES = ("count", "users", "sum", "average")
# Breakdown values beyond the most frequent ones are summed up as OTHER, so a property
# with thousands of values (a search query) still draws a readable chart.
MAX_BREAKDOWN_VALUES = 10
OTHER = "other"
CATEGORY_BREAKDOWN = "category"


# Filter suggestions come from this many of the most recent events: enough to see every
# event type and key a shop sends, bounded so they cost the same at any event count.
SUGGESTION_SAMPLE = 5_000
SUGGESTED_VALUE_MAX_CHARS = 100


def filter_suggestions(*, limit: int = 20, values_per_key: int = 5) -> dict[str, list[str]]:
    """What the filter fields offer, from recent events, most frequent first:
    ``event_types``, ``property_keys``, and ``property_filters``: `key=value` for the most
    frequent text and whole-number values of each suggested key (other values compare
    differently as text on SQLite and PostgreSQL, so they are typed, not suggested)."""
    types: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    values: dict[str, Counter[str]] = {}
    for event_type, properties in (Event.objects.order_by("-id")
                                   .values_list("type", "properties")[:SUGGESTION_SAMPLE]):
        types[event_type] += 1
        if not isinstance(properties, dict):
            continue
        keys.update(properties.keys())
        for key, value in properties.items():
            if isinstance(value, str | int) and not isinstance(value, bool) \
                    and len(str(value)) <= SUGGESTED_VALUE_MAX_CHARS:
                values.setdefault(key, Counter())[str(value)] += 1
    suggested_keys = _most_frequent(keys, limit)
    return {
        "event_types": _most_frequent(types, limit),
        "property_keys": suggested_keys,
        "property_filters": [f"{key}={value}" for key in suggested_keys
                             for value in _most_frequent(values.get(key, Counter()),
                                                         values_per_key)],
    }


def _most_frequent(counts: Counter[str], limit: int) -> list[str]:
    return [name for name, _ in sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))[:limit]]


def period_starts(date_range: DateRange, interval: Interval) -> list[date]:
    """The first day of every period that overlaps the range (weeks start on Monday)."""
    if interval == "day":
        return date_range.dates()
    if interval == "week":
        current = date_range.start - timedelta(days=date_range.start.weekday())
    else:
        current = date_range.start.replace(day=1)
    starts = []
    while current <= date_range.end:
        starts.append(current)
        if interval == "week":
            current += timedelta(days=7)
        else:
            current = (current.replace(day=28) + timedelta(days=4)).replace(day=1)
    return starts


def compared_range(date_range: DateRange, interval: Interval) -> DateRange:
    """The range a trend is compared with. By day: the days of equal number just before.
    By week or month: the same days as many whole weeks or months before as the range has
    periods, so each period lines up with one of the same shape (shifted by its own length,
    a range not starting on a Monday put one week's days in both and left the lists of
    periods one apart)."""
    if interval == "day":
        return date_range.previous()
    periods = len(period_starts(date_range, interval))
    if interval == "week":
        shift = timedelta(days=7 * periods)
        return DateRange(start=date_range.start - shift, end=date_range.end - shift)
    return DateRange(start=_months_before(date_range.start, periods),
                     end=_months_before(date_range.end, periods))


def _months_before(day: date, months: int) -> date:
    """The same day of the month ``months`` earlier; a month's last day maps to the last."""
    year, month_index = divmod(day.year * 12 + day.month - 1 - months, 12)
    last_day = calendar.monthrange(year, month_index + 1)[1]
    is_last = day.day == calendar.monthrange(day.year, day.month)[1]
    return date(year, month_index + 1, last_day if is_last else min(day.day, last_day))


def trends(*, date_range: DateRange, event_types: list[str], measure: Measure = "count",
           interval: Interval = "day", category: str | None = None,
           property_filter: tuple[str, str] | None = None, breakdown: str | None = None,
           compare: bool = False) -> dict[str, Any]:
    """One series per event type (and breakdown value), a value per period.

    ``measure``: events counted, distinct persons, or the sum or average of ``value``.
    ``property_filter`` ``(key, value)`` keeps events whose ``properties[key]`` equals the
    value as text; ``breakdown`` is ``"category"`` (the item's category) or a property key.
    A key no event has is not an error: it filters everything out, or breaks down into
    "(none)". Only the MAX_BREAKDOWN_VALUES most frequent values (by events in the range)
    get their own series; the rest are one series "other". With ``compare``, every series
    also carries ``previous``: the same measure over compared_range, period by period.
    """
    starts = period_starts(date_range, interval)
    ranges = {"current": (date_range, starts)}
    if compare:
        previous_range = compared_range(date_range, interval)
        ranges["previous"] = (previous_range, period_starts(previous_range, interval))
    # Counts, sums and averages by type and category add up from per-day figures (the
    # rollups where built), and so do those by a property key the rollups count
    # (_counted_on_events); unique persons of the standard types come from the rollups'
    # person-days where built; other types and property filters or breakdowns need the
    # events themselves.
    from_days = (measure != "users" and property_filter is None
                 and breakdown in (None, CATEGORY_BREAKDOWN))
    kept_values = None
    figures, totals = {}, {}
    if from_days:
        days = {name: _day_rows(date_range=measured_range, event_types=event_types,
                                category=category, breakdown=breakdown)
                for name, (measured_range, _) in ranges.items()}
        if breakdown:
            kept_values = _top_day_buckets(days["current"])
        for name, rows in days.items():
            figures[name] = _figures_from_days(rows, measure=measure, interval=interval,
                                               kept_values=kept_values)
            totals[name] = (_figures_from_days(rows, measure=measure, interval=None,
                                               kept_values=kept_values)
                            if measure == "average" else {})
    else:
        if breakdown and measure == "users":
            # Distinct persons of the values folded into OTHER do not add up, so the values
            # are chosen before the persons are counted.
            kept_values = (
                _top_categories(date_range=date_range, event_types=event_types,
                                category=category)
                if breakdown == CATEGORY_BREAKDOWN and property_filter is None else
                _top_breakdown_values(_matching(date_range=date_range, event_types=event_types,
                                                category=category,
                                                property_filter=property_filter), breakdown))
        scope = {"event_types": event_types, "category": category, "breakdown": breakdown}
        rolled_up = {name: _rolled_up_persons(date_range=measured_range, interval=interval,
                                              kept_values=kept_values, **scope)
                     for name, (measured_range, _) in ranges.items()
                     if measure == "users" and property_filter is None}
        measured_ranges = {name: measured_range for name, (measured_range, _) in ranges.items()}
        if rolled_up and None not in rolled_up.values():
            figures = {name: persons[0] for name, persons in rolled_up.items()}
            totals = {name: persons[1] for name, persons in rolled_up.items()}
        elif measure == "users":
            figures, totals = _persons_on_events(ranges=measured_ranges, interval=interval,
                                                 property_filter=property_filter,
                                                 kept_values=kept_values, **scope)
        else:
            figures, totals, kept_values = _counted_on_events(
                ranges=measured_ranges, measure=measure, interval=interval,
                property_filter=property_filter, **scope)

    if breakdown:
        found = set().union(*(set(by_key) for by_key in figures.values()))
        series_keys = sorted(found, key=lambda key: (event_types.index(key[0]), key[1] == OTHER,
                                                     _rank(key[1], kept_values or [])))
    else:
        series_keys = [(event_type, None) for event_type in event_types]
    series = []
    for key in series_keys:
        row: dict[str, Any] = {"event_type": key[0], "breakdown_value": key[1]}
        for name, (_, period_list) in ranges.items():
            values = [figures[name].get(key, {}).get(start, 0) for start in period_list]
            prefix = "" if name == "current" else "previous_"
            row[f"{prefix}values"] = values
            row[f"{prefix}total"] = _total(values, measure, totals[name].get(key, {}))
        series.append(row)
    return {
        "interval": interval, "measure": measure, "breakdown": breakdown,
        "periods": [start.isoformat() for start in starts],
        "previous_periods": ([start.isoformat() for start in ranges["previous"][1]]
                             if compare else None),
        "series": series,
    }


# (day, event type, breakdown bucket or None, events, value sum, events with a value)
DayRow = tuple[date, str, str | None, int, float, int]
# {(event type, breakdown bucket or None): {period start, or None for the whole range: figure}}
Figures = dict[tuple[str, str | None], dict[date | None, float]]


def _day_rows(*, date_range: DateRange, event_types: list[str], category: str | None,
              breakdown: str | None) -> list[DayRow]:
    sql, params = sources.daily_events(date_range=date_range, category=category,
                                       event_types=event_types)
    rows: dict[tuple[date, str, str | None], list[float]] = {}
    for day, event_type, item_category, events, value_sum, value_events in sources.fetch(
            f"SELECT day, event_type, category, SUM(events), SUM(value_sum), "
            f"SUM(value_events) FROM ({sql}) AS daily GROUP BY day, event_type, category",
            params):
        bucket = (item_category or NONE_VALUE) if breakdown else None
        figures = rows.setdefault((sources.as_date(day), event_type, bucket), [0, 0.0, 0])
        figures[0] += int(events)
        figures[1] += float(value_sum or 0.0)
        figures[2] += int(value_events)
    return [(*key, *figures) for key, figures in rows.items()]


def _top_day_buckets(rows: list[DayRow]) -> list[str]:
    events: Counter[str] = Counter()
    for _, _, bucket, count, _, _ in rows:
        events[bucket] += count
    return _most_events(events)


def _most_events(events: Counter[str]) -> list[str]:
    """The buckets with most events; ties by name in code-point order, on any database."""
    return [bucket for bucket, _ in sorted(events.items(), key=lambda kv: (-kv[1], kv[0]))
            [:MAX_BREAKDOWN_VALUES]]


def _top_categories(*, date_range: DateRange, event_types: list[str],
                    category: str | None) -> list[str]:
    """The categories kept in a breakdown of a measure counted on events (distinct
    persons), ranked as the per-day path ranks them. With rollups they come from the
    per-day rows (10M events, 120 days: 1.0 s less than counting the events); without,
    from one count per category, cheaper than per-day rows from the events."""
    if sources.rollup_watermark() is not None:
        return _top_day_buckets(_day_rows(date_range=date_range, event_types=event_types,
                                          category=category, breakdown=CATEGORY_BREAKDOWN))
    events = _matching(date_range=date_range, event_types=event_types, category=category,
                       property_filter=None)
    return _most_events(Counter({row["bucket"]: row["events"] for row in
                                 _events_per_bucket(events, CATEGORY_BREAKDOWN).order_by()}))


def _figures_from_days(rows: list[DayRow], *, measure: Measure, interval: Interval | None,
                       kept_values: list[str] | None) -> Figures:
    """Per-day rows' figures per period of ``interval``, or over the whole range (keyed
    None) without one."""
    period_of = sources.period_of(interval)
    sums: dict[tuple[str, str | None], dict[date | None, list[float]]] = {}
    for day, event_type, bucket, count, value_sum, value_events in rows:
        if kept_values is not None and bucket not in kept_values:
            bucket = OTHER
        figures = sums.setdefault((event_type, bucket), {}).setdefault(period_of(day),
                                                                       [0, 0.0, 0])
        figures[0] += count
        figures[1] += value_sum
        figures[2] += value_events
    if measure == "count":  # whole numbers, as counted
        return {key: {period: f[0] for period, f in by_period.items()}
                for key, by_period in sums.items()}
    measured = {"sum": lambda f: f[1], "average": lambda f: f[1] / f[2] if f[2] else 0}[measure]
    # Rounded to 9 places first: sums added in another order (rolled-up days, or the events
    # at once) differ in their last bits, and an average of cents often ends in a half
    # cent (1.01 and 1.02: 1.015), which those bits would round either way.
    return {key: {period: round(round(float(measured(f)), 9), 2)
                  for period, f in by_period.items()}
            for key, by_period in sums.items()}


def _rolled_up_persons(*, date_range: DateRange, event_types: list[str], category: str | None,
                       breakdown: str | None, kept_values: list[str] | None, interval: Interval
                       ) -> tuple[Figures, Figures] | None:
    """What _persons_on_events counts as unique persons, per period and over the whole range (keyed
    None), from the rollups' person-days of the types (sources.typed_person_days); None
    where they cannot answer it. Buckets are grouped as small integers: sorting those
    costs less than sorting text. On PostgreSQL one statement counts both (GROUPING SETS;
    the persons-by-category endpoint at 10M events over 120 days took 1.8 s against 3.0 s
    with two, benchmarks/README.md); SQLite has no grouping sets and runs two."""
    if breakdown not in (None, CATEGORY_BREAKDOWN):
        return None
    persons = sources.typed_person_days(date_range=date_range, event_types=event_types,
                                        category=category, by_category=breakdown is not None)
    if persons is None:
        return None
    persons_sql, persons_params = persons
    chosen_types = list(dict.fromkeys(event_types))
    # A category named like OTHER shares its series, as in _persons_on_events.
    buckets = list(dict.fromkeys([*(kept_values or []), OTHER])) if breakdown else [None]
    bucket_sql, bucket_params = (_rolled_up_bucket(kept_values or [], buckets) if breakdown
                                 else ("0", []))
    # One pass for every type: each counts the rows with its bit.
    counts = ", ".join(f"COUNT(DISTINCT persons.person) FILTER (WHERE (persons.type_bits & "
                       f"{TYPE_BITS[event_type]}) <> 0)" for event_type in chosen_types)

    if interval == "day":
        # A day is its own period: no join (at 10M events over 120 days it cost 12-15% of
        # the persons-by-category statement). The range's bounds, as the join had: a raw
        # event the database dates outside them (zone rules at the edge) is left out.
        period = "persons.day"
        per_period_from = f"FROM ({persons_sql}) AS persons WHERE persons.day BETWEEN %s AND %s"
        per_period_params = [*bucket_params, *persons_params,
                             sources.date_param(date_range.start),
                             sources.date_param(date_range.end)]
    else:
        periods_sql, periods_params = sources.periods(days=date_range.dates(),
                                                      period_of=sources.period_of(interval))
        period = "period_of.period"
        per_period_from = (f"FROM ({persons_sql}) AS persons JOIN ({periods_sql}) AS period_of "
                           "ON period_of.day = persons.day")
        per_period_params = [*bucket_params, *persons_params, *periods_params]
    if connection.vendor == "postgresql":
        rows = sources.fetch(f"SELECT {period}, {bucket_sql}, {counts} {per_period_from} "
                             "GROUP BY GROUPING SETS ((1, 2), (2))", per_period_params)
    else:
        rows = (sources.fetch(f"SELECT {period}, {bucket_sql}, {counts} "
                              f"{per_period_from} GROUP BY 1, 2", per_period_params)
                + sources.fetch(f"SELECT NULL, {bucket_sql}, {counts} FROM ({persons_sql}) "
                                "AS persons GROUP BY 2", [*bucket_params, *persons_params]))
    figures: Figures = {}
    totals: Figures = {}
    for start, bucket, *persons_per_type in rows:
        # The whole range's row has no period (periods themselves are never NULL).
        period_start = sources.as_date(start) if start is not None else None
        counted = figures if start is not None else totals
        for event_type, count in zip(chosen_types, persons_per_type):
            if count:
                counted.setdefault((event_type, buckets[bucket]), {})[period_start] = \
                    round(float(count), 2)
    return figures, totals


def _rolled_up_bucket(kept_values: list[str], buckets: list[str]) -> tuple[str, list[Any]]:
    """SQL for the index in buckets of a person-day's category ("" for none): its kept
    value's, else OTHER's, as _breakdown_expression and _persons_on_events's folding name
    it."""
    whens, params = [], []
    for value in kept_values:
        stored = ("", NONE_VALUE) if value == NONE_VALUE else (value,)
        whens.append(f"WHEN persons.category IN ({', '.join(['%s'] * len(stored))}) "
                     f"THEN {buckets.index(value)}")
        params += stored
    other = buckets.index(OTHER)
    return (f"CASE {' '.join(whens)} ELSE {other} END" if whens else str(other)), params


def _rank(value: str | None, kept_values: list[str]) -> int:
    return kept_values.index(value) if value in kept_values else len(kept_values)


def _matching(*, date_range: DateRange, event_types: list[str], category: str | None,
              property_filter: tuple[str, str] | None) -> QuerySet[Event]:
    events = events_in_range(date_range=date_range, category=category).filter(type__in=event_types)
    if property_filter:
        key, value = property_filter
        # As text, so "3" matches a stored 3 and "true" a stored true, as a user types them.
        events = events.alias(filter_value=property_text(key)).filter(filter_value=value)
    return events


def _breakdown_expression(breakdown: str):
    if breakdown == CATEGORY_BREAKDOWN:
        # No item and an item without a category are one series, as on the items page.
        return Coalesce(NullIf("item__category", Value("")), Value(NONE_VALUE),
                        output_field=CharField())
    return property_bucket(breakdown)


def _events_per_bucket(events: QuerySet[Event], breakdown: str) -> QuerySet:
    return (events.annotate(bucket=_breakdown_expression(breakdown)).values("bucket")
            .annotate(events=Count("id")))


def _top_breakdown_values(events: QuerySet[Event], breakdown: str) -> list[str]:
    ranked = _events_per_bucket(events, breakdown).order_by("-events", "bucket")
    return [row["bucket"] for row in ranked[:MAX_BREAKDOWN_VALUES]]


def _counted_on_events(*, ranges: dict[str, DateRange], event_types: list[str],
                       category: str | None, property_filter: tuple[str, str] | None,
                       measure: Measure, interval: Interval, breakdown: str | None
                       ) -> tuple[dict[str, Figures], dict[str, Figures], list[str] | None]:
    """Counts, sums or averages of every range, per period and (averages) over the whole
    range, from one statement that sums the events per day from the previous range's start
    to the current one's end: one scan reads both, and a day is in one range and one
    period. With a breakdown, that statement also keeps the values with most events in the
    current range (ties by name in the database's collation, as _top_breakdown_values
    ranks them) and folds the rest into OTHER, and the kept values come back ranked. A
    query per range, one more per range for averages' totals, and one to rank the values
    read the events three times (five for averages): a weekly breakdown by a property with
    compare, 10M events over 120 days, took 3.3 s counted and 5.0 s averaged that way,
    2.6 s in one statement, 1.3-1.5 s with the day's statistics (migration 0009)
    (benchmarks/README.md, session 23). Where the rollups count the key of the breakdown,
    or of the property filter without a breakdown or with one by category
    (ANALYTICS_ROLLUP_PROPERTIES), the statement sums their per-day rows (of the category
    filter's, if any; per category for a category breakdown) instead of reading the events
    (sessions 26, 27 and 29)."""
    current = ranges["current"]
    span = DateRange(start=min(measured.start for measured in ranges.values()), end=current.end)
    rolled_up = None
    if breakdown in (None, CATEGORY_BREAKDOWN) and property_filter is not None:
        filter_key, filter_value = property_filter
        rolled_up = sources.property_days(date_range=span, event_types=event_types,
                                          key=filter_key, value=filter_value, category=category,
                                          by_category=breakdown is not None)
    elif breakdown not in (None, CATEGORY_BREAKDOWN) and property_filter is None:
        rolled_up = sources.property_days(date_range=span, event_types=event_types,
                                          key=breakdown, category=category)
    if rolled_up is not None:
        grouped_sql, params = rolled_up
    else:
        grouped = (_matching(date_range=span, event_types=event_types, category=category,
                             property_filter=property_filter)
                   .annotate(day=Trunc("timestamp", "day", output_field=DateField()),
                             bucket=(_breakdown_expression(breakdown) if breakdown
                                     else Value(NONE_VALUE)))
                   .values("day", "type", "bucket")
                   .annotate(events=Count("id"), value_sum=Sum("value"),
                             value_events=Count("value"))
                   .order_by())
        grouped_sql, params = grouped.query.sql_with_params()
    rows = sources.fetch(
        f"WITH grouped AS ({grouped_sql}), kept AS (SELECT bucket, ROW_NUMBER() OVER "
        "(ORDER BY SUM(events) DESC, bucket) AS position FROM grouped WHERE day >= %s "
        "GROUP BY bucket ORDER BY position LIMIT %s) "
        "SELECT grouped.day, grouped.type, COALESCE(kept.bucket, %s), kept.position, "
        "SUM(grouped.events), SUM(grouped.value_sum), SUM(grouped.value_events) "
        "FROM grouped LEFT JOIN kept ON kept.bucket = grouped.bucket GROUP BY 1, 2, 3, 4",
        [*params, sources.date_param(current.start), MAX_BREAKDOWN_VALUES, OTHER])
    per_range: dict[str, list[DayRow]] = {name: [] for name in ranges}
    ranked: dict[int, str] = {}
    for day, event_type, kept_bucket, position, count, value_sum, value_events in rows:
        if position is not None:
            ranked[int(position)] = kept_bucket
        day = sources.as_date(day)
        # A day the database dates outside the ranges (its zone rules differing from
        # Python's at the edge), or between them (by week or month they need not meet), is
        # left out, as the ranges' own bounds leave it.
        in_range = next((per_range[name] for name, measured in ranges.items()
                         if measured.start <= day <= measured.end), None)
        if in_range is not None:
            in_range.append((day, event_type, kept_bucket if breakdown else None, int(count),
                             float(value_sum or 0.0), int(value_events)))
    kept_values = [ranked[position] for position in sorted(ranked)] if breakdown else None
    figures = {name: _figures_from_days(days, measure=measure, interval=interval,
                                        kept_values=kept_values)
               for name, days in per_range.items()}
    totals = {name: (_figures_from_days(days, measure=measure, interval=None,
                                        kept_values=kept_values)
                     if measure == "average" else {})
              for name, days in per_range.items()}
    return figures, totals, kept_values


def _persons_on_events(*, ranges: dict[str, DateRange], event_types: list[str],
                       category: str | None, property_filter: tuple[str, str] | None,
                       interval: Interval, breakdown: str | None, kept_values: list[str] | None
                       ) -> tuple[dict[str, Figures], dict[str, Figures]]:
    """Distinct persons of each range per period and over the whole range, from the events;
    values outside ``kept_values`` count as OTHER in the query itself. On PostgreSQL one
    statement per range counts both (GROUPING SETS, as _rolled_up_persons); SQLite runs two.
    A weekly breakdown by a property with compare, 10M events over 120 days: 11.8 s with
    two statements per range, 7.4 s with one (benchmarks/README.md, session 23). A range at
    a time: both ranges in one statement sort more rows at once (14.7 s instead of 11.3 s
    with two statements each)."""
    figures: dict[str, Figures] = {name: {} for name in ranges}
    totals: dict[str, Figures] = {name: {} for name in ranges}
    for name, measured_range in ranges.items():
        events = _matching(date_range=measured_range, event_types=event_types,
                           category=category, property_filter=property_filter)
        if breakdown and kept_values:
            events = events.alias(raw_bucket=_breakdown_expression(breakdown)).annotate(
                bucket=Case(*[When(raw_bucket=value, then=Value(value)) for value in kept_values],
                            default=Value(OTHER), output_field=CharField()))
        else:
            events = events.annotate(bucket=Value(OTHER if breakdown else NONE_VALUE,
                                                  output_field=CharField()))
        persons_sql, params = (events.annotate(period=Trunc("timestamp", interval,
                                                            output_field=DateField()),
                                               person=person_key())
                               .values_list("type", "bucket", "period", "person")
                               .query.sql_with_params())
        counted = f"COUNT(DISTINCT person) FROM ({persons_sql}) AS persons"
        if connection.vendor == "postgresql":
            rows = sources.fetch(f"SELECT type, bucket, period, {counted} "
                                 "GROUP BY GROUPING SETS ((1, 2, 3), (1, 2))", list(params))
        else:
            rows = (sources.fetch(f"SELECT type, bucket, period, {counted} GROUP BY 1, 2, 3",
                                  list(params))
                    + sources.fetch(f"SELECT type, bucket, NULL, {counted} GROUP BY 1, 2",
                                    list(params)))
        for event_type, bucket, period, count in rows:
            # The whole range's rows have no period (periods themselves are never NULL).
            into = totals[name] if period is None else figures[name]
            into.setdefault((event_type, bucket if breakdown else None), {})[
                None if period is None else sources.as_date(period)] = round(float(count), 2)
    return figures, totals


def _total(values: list[float], measure: Measure, whole_range: dict[date | None, float]) -> float:
    """Counts and sums add up over periods; distinct persons and averages do not, so
    theirs are measured over the whole range."""
    if measure in ("count", "sum"):
        return round(sum(values), 2)
    return whole_range.get(None, 0.0)
