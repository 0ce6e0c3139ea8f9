from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from recommender.models import ModelKind, ModelVersion


class Command(BaseCommand):
    help = ("Train each model kind in this process unless a trained version of it exists "
            "(make run).")

    def handle(self, *args, **options):
        for kind in ModelKind.values:
            # The demo's past versions (recommender.services.store_past_impressions) have
            # no artifact: a shop with only those has nothing trained to serve.
            if ModelVersion.objects.filter(kind=kind).exclude(artifact_path="").exists():
                self.stdout.write(f"{kind}: a trained version exists; skipping.")
                continue
            self.stdout.write(f"{kind}: training on the demo data (first start only)...")
            try:
                call_command("train", kind, sync=True, stdout=self.stdout)
            except CommandError as error:
                self.stderr.write(f"{kind}: {error} The fallback serves until a job succeeds.")
