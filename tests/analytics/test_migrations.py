"""Migration 0009's statistics describe the very expression trends group events by, so
PostgreSQL's planner finds them (a Django upgrade that wrote Trunc differently would leave
them unused, and trends on events slow again)."""

from datetime import date

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from analytics.insights import trends
from analytics.insights.common import DateRange
from ingestion.models import Event


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
