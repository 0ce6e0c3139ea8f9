"""Migration 0009's statistics describe the very expression trends group events by, so
PostgreSQL's planner finds them (a Django upgrade that wrote Trunc differently would leave
them unused, and trends on events slow again); migration 0010's index is the one a
category's reads of the per-user rollups go through."""

import uuid
from datetime import date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics import services
from analytics.insights import sources, trends
from analytics.insights.common import DateRange, analytics_queries
from ingestion.models import Event
from ingestion.services import EventInput, store_events, upsert_items


def grouped_by(sql: str) -> list[str]:
    """The plan's group keys, the events' columns named without their table (as where the
    query reads no other table)."""
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}")
        return [line.replace(f"{Event._meta.db_table}.", "") for line, in cursor.fetchall()
                if "Group Key:" in line]


@pytest.mark.django_db
def test_the_day_statistics_are_on_the_expression_events_are_grouped_by_day_with():
    if connection.vendor != "postgresql":
        pytest.skip("statistics for PostgreSQL's planner")
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(pg_get_statisticsobjdef_expressions(oid)) "
                       "FROM pg_statistic_ext WHERE stxname = 'analytics_event_day'")
        expressions = [expression for expression, in cursor.fetchall()]
    with CaptureQueriesContext(connection) as trends_queries:
        trends.trends(date_range=DateRange(start=date(2026, 1, 5), end=date(2026, 1, 11)),
                      event_types=["search"], breakdown="plan", compare=True)

    assert len(expressions) == 1
    assert any(expressions[0] in line for line in grouped_by(trends_queries[-1]["sql"]))


@pytest.mark.django_db
def test_one_categorys_persons_per_day_are_read_through_the_category_index():
    day = timezone.localdate() - timedelta(days=3)
    upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                    item_id="sku-1",
                                    timestamp=timezone.make_aware(datetime(day.year, day.month,
                                                                           day.day, 12)))],
                 received_at=timezone.now() - timedelta(hours=1))
    services.roll_up_new_events(now=timezone.now())
    with analytics_queries():
        sql, params = sources.person_days(date_range=DateRange(start=day, end=day),
                                          category="books")
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # A table this small is cheaper to scan whole: ask for the other plans.
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute(f"EXPLAIN {sql}", params)
            else:
                cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())

    assert "user_day_rollup_category" in plan
