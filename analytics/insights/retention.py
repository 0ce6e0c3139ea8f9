"""Retention: cohorts of persons by first-seen day or week, and who comes back."""

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django.db.models import Count, DateField
from django.db.models.functions import Trunc
from django.utils import timezone

from analytics.insights import sources
from analytics.insights.common import DateRange, Period, ratio
from ingestion.models import EndUser


def retention(*, date_range: DateRange, period: Period = "week",
              category: str | None = None) -> dict[str, Any]:
    """Cohorts of users by the period of their first event ever (EndUser.first_seen) within
    the range; for each cohort the share active 0, 1, 2... periods later, up to the end of the
    range or today, whichever is first. Weeks start on Monday. With a category, activity
    means events on its items and a cohort's size counts only users with such activity in
    the range. Read from the rollups where built (sources.py)."""
    period_of = sources.period_of(period)
    active_sql, active_params = sources.person_days(date_range=date_range, category=category)
    seen_sql, seen_params = sources.first_seen_days(date_range=date_range)
    periods_sql, periods_params = sources.periods(days=date_range.dates(), period_of=period_of)
    joined = (f"FROM ({active_sql}) AS active JOIN ({seen_sql}) AS seen ON seen.id = active.person "
              f"JOIN ({periods_sql}) AS cohort ON cohort.day = seen.first_day "
              f"JOIN ({periods_sql}) AS active_period ON active_period.day = active.day")
    joined_params = [*active_params, *seen_params, *periods_params, *periods_params]
    if category:
        sizes = {sources.as_date(cohort): users for cohort, users in sources.fetch(
            f"SELECT cohort.period, COUNT(DISTINCT active.person) {joined} "
            "GROUP BY cohort.period", joined_params)}
    else:
        sizes = dict(EndUser.objects.filter(first_seen__gte=date_range.start_at,
                                            first_seen__lt=date_range.end_before,
                                            identity_link__isnull=True)
                     .annotate(cohort=Trunc("first_seen", period, output_field=DateField()))
                     .values("cohort").annotate(users=Count("id"))
                     .values_list("cohort", "users"))
    active: dict[date, dict[int, int]] = defaultdict(dict)
    step_days = 7 if period == "week" else 1
    for cohort, active_period, users in sources.fetch(
            f"SELECT cohort.period, active_period.period, COUNT(DISTINCT active.person) "
            f"{joined} GROUP BY cohort.period, active_period.period", joined_params):
        cohort, active_period = sources.as_date(cohort), sources.as_date(active_period)
        if active_period >= cohort:
            active[cohort][(active_period - cohort).days // step_days] = users

    # Periods that have not begun are left out, not shown as nobody coming back.
    last_day = min(date_range.end, timezone.localdate())
    last_period = last_day - timedelta(days=last_day.weekday() if period == "week" else 0)
    cohorts = []
    for cohort_start in sorted(sizes):
        size = sizes[cohort_start]
        # At least the cohort's own period: a first event up to a day ahead (a fast
        # clock) can start a cohort after today.
        observable = max((last_period - cohort_start).days // step_days + 1, 1)
        counts = [active[cohort_start].get(offset, 0) for offset in range(observable)]
        cohorts.append({
            "cohort": cohort_start,
            "users": size,
            "active": counts,
            "retention": [ratio(count, size) for count in counts],
        })
    periods = max((len(row["active"]) for row in cohorts), default=0)
    return {"period": period, "periods": periods, "cohorts": cohorts}
