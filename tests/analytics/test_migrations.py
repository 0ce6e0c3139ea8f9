"""Migration 0009's statistics describe the very expression trends group events by, so
PostgreSQL's planner finds them (a Django upgrade that wrote Trunc differently would leave
them unused, and trends on events slow again)."""

import pytest
from django.db import connection
from django.db.models import Count, DateField
from django.db.models.functions import Trunc

from ingestion.models import Event


@pytest.mark.django_db
def test_the_day_statistics_are_on_the_expression_events_are_grouped_by_day_with():
    if connection.vendor != "postgresql" or connection.pg_version < 140000:
        pytest.skip("statistics on expressions are PostgreSQL 14's")
    per_day = (Event.objects.annotate(day=Trunc("timestamp", "day", output_field=DateField()))
               .values("day").annotate(events=Count("id")).order_by())
    sql, params = per_day.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(line for line, in cursor.fetchall())
        cursor.execute("SELECT unnest(pg_get_statisticsobjdef_expressions(oid)) "
                       "FROM pg_statistic_ext WHERE stxname = 'analytics_event_day'")
        expressions = [expression for expression, in cursor.fetchall()]

    assert len(expressions) == 1
    assert f"Group Key: {expressions[0]}" in plan
