from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from recommender.sentiment_scoring import backfill_missing_scores, count_missing_scores


class Command(BaseCommand):
    help = "Score the sentiment of stored events with text that have no score yet."

    def add_arguments(self, parser):
        parser.add_argument("--backfill", action="store_true",
                            help="Score every event with text (or a review headline) and no "
                                 "score, in batches")
        parser.add_argument("--batch-size", type=int, default=2000)

    def handle(self, *args, backfill: bool, batch_size: int, **options):
        if not backfill:
            raise CommandError("Nothing to do: pass --backfill.")
        if batch_size < 1:
            raise CommandError(f"--batch-size must be at least 1, not {batch_size}.")
        missing = count_missing_scores()
        with tqdm(total=missing, unit="text", desc="scoring", disable=missing == 0) as bar:
            scored = backfill_missing_scores(batch_size=batch_size, on_batch=bar.update)
        self.stdout.write(f"Scored {scored} events.")
