"""Overview: events, users, sessions and revenue per day, with the previous period."""

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncDate

from analytics.insights import sources
from analytics.insights.common import DateRange, ratio
from ingestion.models import EndUser


def overview(*, date_range: DateRange, category: str | None = None) -> dict[str, Any]:
    """Active users (DAU per day; WAU and MAU over the 7 and 30 days ending on the last day),
    new vs returning users per day (new = first seen that day, from EndUser.first_seen),
    events by type per day, purchases and revenue per day, and stickiness: the average DAU
    over MAU's 30 days divided by MAU (over a longer range, the range's average DAU against
    the last 30 days' persons passed 100%). Read from the rollups where built (sources.py)."""
    # One read of the range and the 30 days ending on its last day, whichever is longer.
    both = DateRange(start=min(date_range.start, date_range.end - timedelta(days=29)),
                     end=date_range.end)
    # Each window's persons are those active on any of its days (it ends on the last day).
    windows = {"active_users": date_range.start, "mau": date_range.end - timedelta(days=29),
               "wau": date_range.end - timedelta(days=6), "dau": date_range.end}
    split = None if category else sources.person_days_split(date_range=both)
    daily_active: dict[date, int] = defaultdict(int)
    active = dict.fromkeys(windows, 0)
    if split is None:
        active_sql, active_params = sources.person_days(date_range=both, category=category)
    else:
        # Persons counted by their rows' previous days; the rest grouped by person below.
        (own_sql, own_params), (active_sql, active_params) = split
        since = ", ".join("COUNT(CASE WHEN previous_day IS NULL OR previous_day < %s "
                          "THEN 1 END)" for _ in windows)
        for day, persons, *firsts in sources.fetch(
                f"SELECT day, COUNT(*), {since} FROM ({own_sql}) AS own GROUP BY day",
                [*map(sources.date_param, windows.values()), *own_params]):
            day = sources.as_date(day)
            daily_active[day] += persons
            for (name, first_day), first in zip(windows.items(), firsts):
                active[name] += first if day >= first_day else 0
    for day, persons in sources.fetch(
            f"SELECT day, COUNT(DISTINCT person) FROM ({active_sql}) AS active GROUP BY day",
            active_params):
        daily_active[sources.as_date(day)] += persons
    # Each person's latest active day says which of the windows they were active in:
    # one hash aggregate per person instead of four distinct counts.
    latest = ", ".join(f"COUNT(CASE WHEN latest >= %s THEN 1 END) AS {name}"
                       for name in windows)
    for name, persons in zip(windows, sources.fetch(
            f"SELECT {latest} FROM (SELECT person, MAX(day) AS latest FROM ({active_sql}) "
            "AS active GROUP BY person) AS latest_days",
            [*map(sources.date_param, windows.values()), *active_params])[0]):
        active[name] += persons
    if category:
        # New to the product that day and active in the category that day.
        seen_sql, seen_params = sources.first_seen_days(date_range=date_range)
        daily_new = {sources.as_date(day): users for day, users in sources.fetch(
            f"SELECT active.day, COUNT(DISTINCT active.person) FROM ({active_sql}) AS active "
            f"JOIN ({seen_sql}) AS seen ON seen.id = active.person "
            "AND seen.first_day = active.day GROUP BY active.day",
            [*active_params, *seen_params])}
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
    events_sql, events_params = sources.daily_events(date_range=date_range, category=category)
    for day, event_type, count, value_sum in sources.fetch(
            f"SELECT day, event_type, SUM(events), SUM(value_sum) FROM ({events_sql}) AS daily "
            "GROUP BY day, event_type", events_params):
        day, count = sources.as_date(day), int(count)  # PostgreSQL sums bigints as numeric
        daily_types[day][event_type] = count
        type_totals[event_type] += count
        if event_type == "purchase":
            daily_revenue[day] += float(value_sum or 0.0)

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
    mau_days = [date_range.end - timedelta(days=offset) for offset in range(30)]
    mau_average_dau = sum(daily_active.get(day, 0) for day in mau_days) / len(mau_days)
    return {
        "dau": active["dau"],
        "wau": active["wau"],
        "mau": active["mau"],
        "average_dau": round(average_dau, 2),
        "stickiness": ratio(mau_average_dau, active["mau"]),
        "active_users": active["active_users"],
        "events": sum(type_totals.values()),
        "events_by_type": dict(sorted(type_totals.items(), key=lambda kv: (-kv[1], kv[0]))),
        "purchases": type_totals.get("purchase", 0),
        "revenue": round(sum(daily_revenue.values()), 2),
        "days": days,
    }
