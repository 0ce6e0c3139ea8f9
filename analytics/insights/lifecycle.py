"""Lifecycle: per period, how many persons were new, returning, resurrecting or dormant."""

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django.db.models import DateField, F
from django.db.models.functions import Trunc

from analytics.insights.common import DateRange, events_in_range
from analytics.insights.trends import Interval, period_starts
from ingestion.models import EndUser
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
    period before the range's first one to its end, and one per person first seen in it."""
    starts = period_starts(date_range, interval)
    lookback = DateRange(start=_previous_start(starts[0], interval), end=date_range.end)
    events = events_in_range(date_range=lookback, category=category).annotate(
        person=person_key(), period=Trunc("timestamp", interval, output_field=DateField()))
    active: dict[date, set[int]] = defaultdict(set)
    for person, period in events.values_list("person", "period").distinct():
        active[period].add(person)
    first_seen_in = _new_persons(events, lookback=lookback, interval=interval, category=category)
    periods = []
    for start in starts:
        now, before = active.get(start, set()), active.get(_previous_start(start, interval), set())
        # Intersected, not assumed: a late event can make a person's first_seen disagree
        # with the activity stored so far.
        new = (now - before) & first_seen_in.get(start, set())
        periods.append({"period": start.isoformat(), "new": len(new),
                        "returning": len(now & before),
                        "resurrecting": len(now - before - new), "dormant": -len(before - now)})
    return {"interval": interval, "periods": periods}


def _new_persons(events, *, lookback: DateRange, interval: Interval,
                 category: str | None) -> dict[date, set[int]]:
    """Persons first seen per period. Without a category, from the users table (first_seen
    is the time of a user's first event; a linked alias is not a person of its own), which
    spares joining every event to its person's first_seen."""
    if category is None:
        rows = (EndUser.objects.filter(first_seen__gte=lookback.start_at,
                                       first_seen__lt=lookback.end_before,
                                       identity_link__isnull=True)
                .annotate(period=Trunc("first_seen", interval, output_field=DateField()))
                .values_list("period", "id"))
    else:
        # First seen in the period and active in the category in it.
        rows = (events.annotate(first_period=Trunc(person_first_seen(), interval,
                                                   output_field=DateField()))
                .filter(first_period=F("period")).values_list("period", "person").distinct())
    persons: dict[date, set[int]] = defaultdict(set)
    for period, person in rows:
        persons[period].add(person)
    return persons
