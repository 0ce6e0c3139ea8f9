"""Lifecycle: per period, how many persons were new, returning, resurrecting or dormant."""

from datetime import date, timedelta
from typing import Any

from analytics.insights import sources
from analytics.insights.common import DateRange
from analytics.insights.trends import Interval, period_starts


STATUSES = ("new", "returning", "resurrecting", "dormant")


def _previous_start(start: date, interval: Interval) -> date:
    if interval == "day":
        return start - timedelta(days=1)
    if interval == "week":
        return start - timedelta(days=7)
    return (start - timedelta(days=1)).replace(day=1)


def _count_own_persons(counts: list[dict[str, int]], *, own: sources.Relation,
                       periods: sources.Relation, seen: sources.Relation) -> None:
    """Adds the persons of person_days_split's first part to `counts`: a person's row is
    their first in its period where their previous day falls in an earlier period (or
    none, or before the first period), and they return where it falls in the period just
    before; those active in a period who did not return in the next went dormant there.
    No sort by person (benchmarks/README.md, session 28)."""
    (own_sql, own_params), (periods_sql, periods_params), (seen_sql, seen_params) = \
        own, periods, seen
    rows = sources.fetch(
        f"""SELECT period_of.period,
                   SUM(CASE WHEN before.period IS NULL OR before.period < period_of.period
                       THEN 1 ELSE 0 END),
                   SUM(CASE WHEN before.period = period_of.period - 1 THEN 1 ELSE 0 END),
                   SUM(CASE WHEN (before.period IS NULL OR before.period < period_of.period - 1)
                             AND seen.period = period_of.period THEN 1 ELSE 0 END)
            FROM ({own_sql}) AS own
            JOIN ({periods_sql}) AS period_of ON period_of.day = own.day
            LEFT JOIN ({periods_sql}) AS before ON before.day = own.previous_day
            LEFT JOIN ({seen_sql}) AS seen ON seen.person = own.person
            GROUP BY period_of.period""",
        [*own_params, *periods_params, *periods_params, *seen_params])
    active = [0] * len(counts)
    returning = [0] * len(counts)
    for number, persons, returned, new in rows:
        active[number], returning[number] = int(persons), int(returned)
        counts[number]["active"] += int(persons)
        counts[number]["returning"] += int(returned)
        counts[number]["new"] += int(new)
    for number in range(1, len(counts)):
        counts[number]["dormant"] -= active[number - 1] - returning[number]


def lifecycle(*, date_range: DateRange, interval: Interval = "week",
              category: str | None = None) -> dict[str, Any]:
    """For every period of the range, the persons active in it split into
    ``new`` (first seen in this period), ``returning`` (also active in the period before),
    ``resurrecting`` (not active in the period before, but seen earlier), and ``dormant``:
    active in the period before and not in this one (reported as a negative count, as
    lifecycle charts draw it below the axis). Weeks start on Monday.

    The database counts each status per period over the activity (rollups where built,
    sources.py) from the period before the range's first one to its end: over every
    category, the persons of sources.person_days_split's first part by their days' links
    to the day before (_count_own_persons), the others, and a category's, ordered by
    person and period; only the counts come back."""
    starts = period_starts(date_range, interval)
    # Periods are numbered from 0 (the one before the range's first) so that "the period
    # before" is number - 1 and needs no join.
    numbered = [_previous_start(starts[0], interval), *starts]
    number_of = {start: number for number, start in enumerate(numbered)}
    lookback = DateRange(start=numbered[0], end=date_range.end)
    period_of = sources.period_of(interval)
    split = None if category else sources.person_days_split(date_range=lookback)
    if split is None:
        active_sql, active_params = sources.person_days(date_range=lookback, category=category)
    else:
        (own_sql, own_params), (active_sql, active_params) = split
    seen_sql, seen_params = sources.first_seen_days(date_range=lookback)
    periods_sql, periods_params = sources.periods(
        days=lookback.dates(), period_of=lambda day: number_of[period_of(day)])
    seen_periods = (f"SELECT first.id AS person, first_period.period AS period "
                    f"FROM ({seen_sql}) AS first JOIN ({periods_sql}) AS first_period "
                    "ON first_period.day = first.first_day")
    # One sort of the person-days by person and period, one window over it: a person's
    # first day in a period carries the period of the row before (their previous active
    # period, or this one for later days), their last day the period of the row after
    # (their next active period). At 10M events over 120 days, weekly, under a 64 MB
    # work_mem, this took 1.1 s, against 1.5 s deduplicating the periods first and 2.9 s
    # joining the activity to itself; on one database, 64 MB -> 4 MB
    # (common.ANALYTICS_WORK_MEM) took it from 993 to 655 ms. A late event can make
    # first_seen disagree with the activity stored so far, so "new" also requires no
    # activity the period before.
    sql = f"""
        WITH days AS (
            SELECT period_of.period AS period, seen.period AS seen_period,
                   LAG(period_of.period) OVER by_person AS row_before,
                   LEAD(period_of.period) OVER by_person AS row_after
            FROM ({active_sql}) AS activity
            JOIN ({periods_sql}) AS period_of ON period_of.day = activity.day
            LEFT JOIN ({seen_periods}) AS seen ON seen.person = activity.person
            WINDOW by_person AS (PARTITION BY activity.person ORDER BY period_of.period))
        SELECT period,
               SUM(CASE WHEN row_before IS NULL OR row_before < period THEN 1 ELSE 0 END),
               SUM(CASE WHEN row_before = period - 1 THEN 1 ELSE 0 END),
               SUM(CASE WHEN (row_before IS NULL OR row_before < period - 1)
                         AND seen_period = period THEN 1 ELSE 0 END),
               SUM(CASE WHEN row_after IS NULL OR row_after > period + 1 THEN 1 ELSE 0 END)
        FROM days GROUP BY period
    """
    counts = [{"active": 0, "returning": 0, "new": 0, "dormant": 0} for _ in numbered]
    for number, active, returning, new, leaving in sources.fetch(
            sql, [*active_params, *periods_params, *seen_params, *periods_params]):
        counts[number]["active"] += int(active)
        counts[number]["returning"] += int(returning)
        counts[number]["new"] += int(new)
        # Active in this period and not in the next: dormant in the next.
        if number + 1 < len(numbered):
            counts[number + 1]["dormant"] -= int(leaving)
    if split is not None:
        _count_own_persons(counts, own=(own_sql, own_params), periods=(
            periods_sql, periods_params), seen=(seen_periods, [*seen_params, *periods_params]))
    periods = [{"period": start.isoformat(), "new": row["new"], "returning": row["returning"],
                "resurrecting": row["active"] - row["returning"] - row["new"],
                "dormant": row["dormant"]}
               for start, row in zip(numbered[1:], counts[1:])]
    return {"interval": interval, "periods": periods}
