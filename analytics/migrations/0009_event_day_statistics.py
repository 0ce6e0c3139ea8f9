"""Statistics on the day of an event's timestamp, for PostgreSQL's planner.

Reads that sum events per day group them by ``TruncDate("timestamp")``: trends on events
(property filters and breakdowns), the raw events' daily rows (services.daily_event_rows:
the raw path and tail of trends, the rollups' hourly check). Without statistics on that
expression PostgreSQL estimates as many groups as events (the timestamps are all
distinct), so it aggregates them in one process; with them it aggregates in parallel
workers first. At 10M events over 120 days: a weekly breakdown by a property with compare
2.6 s -> 1.3 s, trends of counts from raw events 2.8 s -> 1.5 s (benchmarks/README.md,
session 23). The expression names the TIME_ZONE in force when this migration ran, as the
ORM writes it; after TIME_ZONE changes the statistics match nothing (queries stay right,
and as slow as before) until they are made again for the new zone. PostgreSQL 14 and
later only: earlier servers have no statistics on expressions. SQLite needs none."""

from django.conf import settings
from django.db import migrations

STATISTICS = "analytics_event_day"


def create_statistics(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql" or connection.pg_version < 140000:
        return
    event_table = schema_editor.quote_name(apps.get_model("ingestion", "Event")._meta.db_table)
    schema_editor.execute(
        f"CREATE STATISTICS IF NOT EXISTS {STATISTICS} ON ((\"timestamp\" AT TIME ZONE "
        f"{schema_editor.quote_value(settings.TIME_ZONE)})::date) FROM {event_table}")
    # Until the table is analysed the statistics are empty, and the plan unchanged.
    schema_editor.execute(f"ANALYZE {event_table}")


def drop_statistics(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0008_rollup_day_paths"),
    ]

    operations = [migrations.RunPython(create_statistics, drop_statistics)]
