"""Lifecycle: per period, how many persons were new, returning, resurrecting or dormant."""

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django.db.models import DateField
from django.db.models.functions import Trunc, TruncDate

from analytics.insights.common import DateRange, events_in_range
from analytics.insights.trends import Interval, period_starts
from ingestion.selectors import person_first_seen, person_key


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

    The database returns one row per person and active period (not per event), from the
    period before the range's first one to its end."""
    starts = period_starts(date_range, interval)
    lookback = DateRange(start=_previous_start(starts[0], interval), end=date_range.end)
    activity = (events_in_range(date_range=lookback, category=category)
                .annotate(person=person_key(), first_seen=TruncDate(person_first_seen()),
                          period=Trunc("timestamp", interval, output_field=DateField()))
                .values_list("person", "period", "first_seen").distinct())
    active: dict[date, set[int]] = defaultdict(set)
    first_period: dict[int, date] = {}
    for person, period, first_seen in activity:
        active[period].add(person)
        if first_seen is not None:
            first_period[person] = _period_of(first_seen, interval)
    periods = []
    for start in starts:
        now, before = active.get(start, set()), active.get(_previous_start(start, interval), set())
        new = {person for person in now if first_period.get(person) == start}
        returning = (now & before) - new
        resurrecting = now - before - new
        periods.append({"period": start.isoformat(), "new": len(new), "returning": len(returning),
                        "resurrecting": len(resurrecting), "dormant": -len(before - now)})
    return {"interval": interval, "periods": periods}


def _period_of(day: date, interval: Interval) -> date:
    if interval == "day":
        return day
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)
