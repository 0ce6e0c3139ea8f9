"""Statistics on the day of an event's timestamp, for PostgreSQL's planner.

Trends on events (property filters and breakdowns: counts, sums, averages) sum the events
per ``Trunc("timestamp", "day")``. Without statistics on that expression PostgreSQL
estimates as many groups as events (the timestamps are all distinct), so it aggregates
them in one process; with them it aggregates in parallel workers first: a weekly breakdown
by a property with compare, 10M events over 120 days, 2.6 s -> 1.3-1.5 s (benchmarks/README.md,
session 23). Not on TruncDate's expression, ``("timestamp" AT TIME ZONE ...)::date``, which
the raw daily rows and person-days group by: statistics on that one took trends of counts
from raw events from 2.8 s to 1.5 s, but gave the overview's raw person-days a parallel
plan that ran over 100 s (then stopped) instead of 4-9 s. The expression names the
TIME_ZONE in force when this migration ran, as the ORM writes it; after TIME_ZONE changes
the statistics match nothing (queries stay right, and as slow as before) until they are
made again for the new zone: ``manage.py remake_day_statistics``. SQLite needs none."""

from django.conf import settings
from django.db import migrations

STATISTICS = "analytics_event_day"


def create_statistics(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    event_table = schema_editor.quote_name(apps.get_model("ingestion", "Event")._meta.db_table)
    # Statistics left under this name for another zone or expression are replaced.
    schema_editor.execute(f"DROP STATISTICS IF EXISTS {STATISTICS}")
    schema_editor.execute(
        f"CREATE STATISTICS {STATISTICS} ON (date_trunc('day', \"timestamp\" AT TIME ZONE "
        f"{schema_editor.quote_value(settings.TIME_ZONE)})) FROM {event_table}")
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
