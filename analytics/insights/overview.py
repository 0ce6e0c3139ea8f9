"""Overview: events, users, sessions and revenue per day, with the previous period."""

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django.db.models import Count, F, Max, Q, Sum
from django.db.models.functions import TruncDate

from analytics.insights.common import DateRange, events_in_range, ratio
from ingestion.models import EndUser
from ingestion.selectors import person_first_seen, person_key


def overview(*, date_range: DateRange, category: str | None = None) -> dict[str, Any]:
    """Active users (DAU per day; WAU and MAU over the 7 and 30 days ending on the last day),
    new vs returning users per day (new = first seen that day, from EndUser.first_seen),
    events by type per day, purchases and revenue per day, and stickiness: the average DAU
    over the range divided by MAU."""
    events = events_in_range(date_range=date_range, category=category)
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
    latest_per_user = (events_in_range(date_range=both, category=category)
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
        "stickiness": ratio(average_dau, active["mau"]),
        "active_users": active["active_users"],
        "events": sum(type_totals.values()),
        "events_by_type": dict(sorted(type_totals.items(), key=lambda kv: -kv[1])),
        "purchases": type_totals.get("purchase", 0),
        "revenue": round(sum(daily_revenue.values()), 2),
        "days": days,
    }
