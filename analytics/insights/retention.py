"""Retention: cohorts of persons by first-seen day or week, and who comes back."""

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django.db.models import Count, DateField
from django.db.models.functions import Trunc

from analytics.insights.common import DateRange, Period, events_in_range, ratio
from ingestion.models import EndUser
from ingestion.selectors import person_first_seen, person_key


def retention(*, date_range: DateRange, period: Period = "week",
              category: str | None = None) -> dict[str, Any]:
    """Cohorts of users by the period of their first event ever (EndUser.first_seen) within
    the range; for each cohort the share active 0, 1, 2... periods later, up to the end of the
    range. Weeks start on Monday. With a category, activity means events on its items and a
    cohort's size counts only users with such activity in the range."""
    events = events_in_range(date_range=date_range, category=category).annotate(
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
            "retention": [ratio(count, size) for count in counts],
        })
    periods = max((len(row["active"]) for row in cohorts), default=0)
    return {"period": period, "periods": periods, "cohorts": cohorts}
