import importlib

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connection

# The migration that first made them: one definition of what they are.
_STATISTICS_MIGRATION = "analytics.migrations.0009_event_day_statistics"


class Command(BaseCommand):
    help = ("Remakes PostgreSQL's statistics on the day of an event's timestamp for the "
            "current TIME_ZONE (run it after changing TIME_ZONE; SQLite has none).")

    def handle(self, *args, **options):
        if connection.vendor != "postgresql":
            self.stdout.write("Nothing to remake: only PostgreSQL keeps these statistics.")
            return
        migration = importlib.import_module(_STATISTICS_MIGRATION)
        with connection.schema_editor() as editor:
            migration.create_statistics(apps, editor)
        self.stdout.write(f"Statistics {migration.STATISTICS} remade for {settings.TIME_ZONE} "
                          "and the events table analysed.")
