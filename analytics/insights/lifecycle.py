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
    lookback = DateRange(start=_previous_start(starts[0], interval), end=date_range.end)
    period_of = sources.period_of(interval)
    active_sql, active_params = sources.person_days(date_range=lookback, category=category)
    seen_sql, seen_params = sources.first_seen_days(date_range=lookback)
    periods_sql, periods_params = sources.periods(days=lookback.dates(), period_of=period_of)
    # (period, the period before it) for every period of the range.
    previous_sql, previous_params = sources.periods(
        days=starts, period_of=lambda start: _previous_start(start, interval))
    # Persons active per period; whether each was active the period before; and whether
    # they were first seen in it (a late event can make first_seen disagree with the
    # activity stored so far, so "new" also requires no activity the period before).
    sql = f"""
        WITH active AS (
            SELECT DISTINCT period_of.period AS period, activity.person AS person
            FROM ({active_sql}) AS activity
            JOIN ({periods_sql}) AS period_of ON period_of.day = activity.day),
        previous AS ({previous_sql}),
        seen AS (
            SELECT DISTINCT first.id AS person, period_of.period AS period
            FROM ({seen_sql}) AS first
            JOIN ({periods_sql}) AS period_of ON period_of.day = first.first_day),
        current AS (
            SELECT active.period, active.person,
                   CASE WHEN before.person IS NULL THEN 0 ELSE 1 END AS was_active,
                   CASE WHEN seen.person IS NULL THEN 0 ELSE 1 END AS first_seen_now
            FROM active JOIN previous ON previous.day = active.period
            LEFT JOIN active AS before ON before.person = active.person
                                      AND before.period = previous.period
            LEFT JOIN seen ON seen.person = active.person AND seen.period = active.period)
        SELECT period, COUNT(*),
               SUM(was_active),
               SUM(CASE WHEN was_active = 0 AND first_seen_now = 1 THEN 1 ELSE 0 END)
        FROM current GROUP BY period
        UNION ALL
        SELECT previous.day, -COUNT(*), NULL, NULL
        FROM previous JOIN active ON active.period = previous.period
        LEFT JOIN active AS after ON after.person = active.person AND after.period = previous.day
        WHERE after.person IS NULL GROUP BY previous.day
    """
    counts: dict[date, dict[str, int]] = {start: {"active": 0, "returning": 0, "new": 0,
                                                  "dormant": 0} for start in starts}
    for period, persons, returning, new in sources.fetch(
            sql, [*active_params, *periods_params, *previous_params, *seen_params,
                  *periods_params]):
        row = counts[sources.as_date(period)]
        if returning is None:
            row["dormant"] = int(persons)
        else:
            row.update(active=int(persons), returning=int(returning), new=int(new))
    periods = [{"period": start.isoformat(), "new": row["new"], "returning": row["returning"],
                "resurrecting": row["active"] - row["returning"] - row["new"],
                "dormant": row["dormant"]}
               for start, row in ((start, counts[start]) for start in starts)]
    return {"interval": interval, "periods": periods}
