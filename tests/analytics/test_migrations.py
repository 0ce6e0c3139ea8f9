"""Migration 0009's statistics describe the very expression daily reads group events by,
so PostgreSQL's planner finds them (a Django upgrade that wrote TruncDate differently would
leave them unused, and those reads slow again). trends' per-day statement groups by the
same TruncDate as the daily rows read here."""

import pytest
from django.db import connection
from analytics.services import daily_event_rows
from ingestion.models import Event


@pytest.mark.django_db
def test_the_day_statistics_are_on_the_expression_events_are_grouped_by_day_with():
    if connection.vendor != "postgresql" or connection.pg_version < 140000:
        pytest.skip("statistics on expressions are PostgreSQL 14's")
    sql, params = daily_event_rows(Event.objects.all()).order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(line for line, in cursor.fetchall())
        cursor.execute("SELECT unnest(pg_get_statisticsobjdef_expressions(oid)) "
                       "FROM pg_statistic_ext WHERE stxname = 'analytics_event_day'")
        expressions = [expression for expression, in cursor.fetchall()]

    assert len(expressions) == 1
    # The plan names the events' columns with their table where the query joins another.
    group_keys = [line.replace(f"{Event._meta.db_table}.", "") for line in plan.splitlines()
                  if "Group Key:" in line]
    assert group_keys and all(expressions[0] in line for line in group_keys)
