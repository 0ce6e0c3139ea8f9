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


def lifecycle(*, date_range: DateRange, interval: Interval = "week",
              category: str | None = None) -> dict[str, Any]:
    """For every period of the range, the persons active in it split into
    ``new`` (first seen in this period), ``returning`` (also active in the period before),
    ``resurrecting`` (not active in the period before, but seen earlier), and ``dormant``:
    active in the period before and not in this one (reported as a negative count, as
    lifecycle charts draw it below the axis). Weeks start on Monday.

    The database reduces the activity (rollups where built, sources.py) to one row per
    person and active period, from the period before the range's first one to its end, and
    counts each status per period from it; only the counts come back."""
    starts = period_starts(date_range, interval)
    # Periods are numbered from 0 (the one before the range's first) so that "the period
    # before" is number - 1 and needs no join.
    numbered = [_previous_start(starts[0], interval), *starts]
    number_of = {start: number for number, start in enumerate(numbered)}
    lookback = DateRange(start=numbered[0], end=date_range.end)
    period_of = sources.period_of(interval)
    active_sql, active_params = sources.person_days(date_range=lookback, category=category)
    seen_sql, seen_params = sources.first_seen_days(date_range=lookback)
    periods_sql, periods_params = sources.numbered_periods(
        days=lookback.dates(), number_of=lambda day: number_of[period_of(day)])
    # One sort by person and period: the first of each person's days in a period is their
    # row for it, with the numbers of the periods they were active in just before and just
    # after (at 10M events over 120 days, 1.4 s against 2.9 s joining the activity to
    # itself). A late event can make first_seen disagree with the activity stored so far,
    # so "new" also requires no activity the period before.
    sql = f"""
        WITH active_days AS (
            SELECT activity.person AS person, period_of.period AS period,
                   LAG(period_of.period) OVER (PARTITION BY activity.person
                                               ORDER BY period_of.period) AS prior
            FROM ({active_sql}) AS activity
            JOIN ({periods_sql}) AS period_of ON period_of.day = activity.day),
        active AS (
            SELECT period, person,
                   LAG(period) OVER by_person AS active_before,
                   LEAD(period) OVER by_person AS active_after
            FROM active_days WHERE prior IS NULL OR prior <> period
            WINDOW by_person AS (PARTITION BY person ORDER BY period)),
        seen AS (
            SELECT first.id AS person, period_of.period AS period
            FROM ({seen_sql}) AS first
            JOIN ({periods_sql}) AS period_of ON period_of.day = first.first_day)
        SELECT active.period, COUNT(*),
               SUM(CASE WHEN active.active_before = active.period - 1 THEN 1 ELSE 0 END),
               SUM(CASE WHEN (active.active_before IS NULL
                              OR active.active_before <> active.period - 1)
                         AND seen.person IS NOT NULL THEN 1 ELSE 0 END)
        FROM active
        LEFT JOIN seen ON seen.person = active.person AND seen.period = active.period
        WHERE active.period > 0 GROUP BY active.period
        UNION ALL
        SELECT period + 1, -COUNT(*), NULL, NULL FROM active
        WHERE period < %s AND (active_after IS NULL OR active_after <> period + 1)
        GROUP BY period
    """
    counts = [{"active": 0, "returning": 0, "new": 0, "dormant": 0} for _ in numbered]
    for number, persons, returning, new in sources.fetch(
            sql, [*active_params, *periods_params, *seen_params, *periods_params,
                  len(numbered) - 1]):
        row = counts[number]
        if returning is None:
            row["dormant"] = int(persons)
        else:
            row.update(active=int(persons), returning=int(returning), new=int(new))
    periods = [{"period": start.isoformat(), "new": row["new"], "returning": row["returning"],
                "resurrecting": row["active"] - row["returning"] - row["new"],
                "dormant": row["dormant"]}
               for start, row in zip(numbered[1:], counts[1:])]
    return {"interval": interval, "periods": periods}
