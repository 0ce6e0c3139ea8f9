import time
from datetime import date, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from ingestion.demo import (
    AB_VERSIONS,
    count_by_type,
    generate_demo_shop,
    store_demo_shop,
    window_end,
)
from ingestion.models import Event
from ingestion.services import EARLIEST_TIMESTAMP
from recommender.services import store_past_impressions


class Command(BaseCommand):
    help = ("Fill the database with a deterministic demo shop: a catalog, users and their "
            "views, clicks, carts, purchases, ratings and reviews over the last --days days, "
            "and an A/B test of two recommender versions (impressions and the clicks and "
            "purchases attributed to them). "
            "The same arguments give the same events (ids included), so running it again "
            "stores nothing new.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--users", type=int, default=600)
        parser.add_argument("--items", type=int, default=240)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument("--end-date", type=date.fromisoformat, default=None,
                            help="The window ends at the start of this day, UTC "
                                 "(YYYY-MM-DD; default today).")
        parser.add_argument("--if-empty", action="store_true",
                            help="Do nothing when any event is stored already.")

    def handle(self, *args: Any, users: int, items: int, days: int, seed: int,
               end_date: date | None, if_empty: bool, **options: Any) -> None:
        if min(users, items, days) < 1:
            raise CommandError("--users, --items and --days must be at least 1.")
        if if_empty and Event.objects.exists():
            self.stdout.write("Events are stored already; seed_demo --if-empty did nothing.")
            return
        started = time.monotonic()
        end = window_end(end_date or timezone.now().date())
        if end - timedelta(days=days) < EARLIEST_TIMESTAMP:
            raise CommandError(f"The window must start in {EARLIEST_TIMESTAMP.year} or later, "
                               "as events sent to the API must.")
        shop = generate_demo_shop(users=users, items=items, days=days, seed=seed, end=end)
        stored = store_demo_shop(shop=shop)
        shown = store_past_impressions(
            impressions=shop.impressions, version_names=AB_VERSIONS,
            note="seed_demo: the demo shop's A/B test; no model behind it")
        first_day, last_day = (end - timedelta(days=days)).date(), (end - timedelta(days=1)).date()
        self.stdout.write(self.style.SUCCESS(
            f"Demo shop (seed {seed}, {first_day} to {last_day}): {users} users, {items} items, "
            f"{len(shop.events):,} events, {stored:,} of them new; "
            f"{len(shop.impressions):,} recommendation impressions, {shown:,} of them new; "
            f"took {time.monotonic() - started:.1f} s."))
        for event_type, count in count_by_type(shop.events).items():
            self.stdout.write(f"  {event_type:<12} {count:>8,}")
