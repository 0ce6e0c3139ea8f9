"""Stickiness: how many persons were active on 1, 2, ... days of a week (or a month)."""

from collections import Counter
from typing import Any, Literal

from django.db.models import Count, DateField
from django.db.models.functions import Trunc, TruncDate

from analytics.insights.common import DateRange, events_in_range
from ingestion.selectors import person_key


StickinessInterval = Literal["week", "month"]
DAYS_IN = {"week": 7, "month": 31}


def stickiness(*, date_range: DateRange, interval: StickinessInterval = "week",
               category: str | None = None) -> dict[str, Any]:
    """For each n from 1 to 7 (weeks) or 31 (months): how many (person, period) pairs had
    events on exactly n distinct days of that period, within the range. A person active in
    three weeks counts once per week. ``share`` is each count over all pairs."""
    per_person_period = (events_in_range(date_range=date_range, category=category)
                         .annotate(person=person_key(),
                                   period=Trunc("timestamp", interval, output_field=DateField()))
                         .values("person", "period")
                         .annotate(days=Count(TruncDate("timestamp"), distinct=True))
                         .values_list("days", flat=True))
    histogram = Counter(per_person_period)
    total = sum(histogram.values())
    return {
        "interval": interval,
        "person_periods": total,
        "days": [{"days": days, "persons": histogram.get(days, 0),
                  "share": histogram.get(days, 0) / total if total else None}
                 for days in range(1, DAYS_IN[interval] + 1)],
    }
