from django.core.management.base import BaseCommand

from recommender.schedules import ensure_default_schedules


class Command(BaseCommand):
    help = "Create the default retraining and job-recovery schedules (idempotent)."

    def handle(self, *args, **options):
        created = ensure_default_schedules()
        self.stdout.write("Created: " + ", ".join(created) if created
                          else "Default schedules exist already.")
