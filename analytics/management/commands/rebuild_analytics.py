import time
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from analytics import services

BAR_WIDTH = 30


class Command(BaseCommand):
    help = ("Rebuild the dashboards' rollups from raw events: all of them (emptied first, "
            "then rolled up again from the beginning of the log), or with --since the days "
            "from that date on. Dashboards stay exact meanwhile (they read the raw events "
            "the rollups do not cover yet).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=date.fromisoformat, default=None,
                            help="First day to rebuild (YYYY-MM-DD); default: everything")

    def handle(self, *args: Any, since: date | None, **options: Any) -> None:
        started = time.monotonic()
        if since is not None:
            days = services.rebuild_days(
                since=since, on_day=lambda day, done, total: self._bar(done, total, str(day)))
            self._finish(f"Rebuilt {days} days from {since}", started)
            return
        services.reset_rollups()
        total = services.pending_events()
        done = 0

        def on_chunk(progress: services.RollupProgress) -> None:
            nonlocal done
            done += progress.events
            self._bar(done, total, f"{done:,}/{total:,} events")

        self._bar(0, total, f"0/{total:,} events")
        # Beat's updates may take chunks meanwhile: wait for them and go on from the
        # watermark (committed chunks stay).
        progress = services.retry_while_busy(
            lambda: services.roll_up_new_events(on_chunk=on_chunk))
        self._finish(f"Rolled up {done:,} events (watermark "
                     f"{progress.watermark.isoformat(timespec='seconds')})", started)

    def _bar(self, done: int, total: int, label: str) -> None:
        filled = BAR_WIDTH * done // total if total else BAR_WIDTH
        self.stdout.write(f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {label}", ending="")
        self.stdout.flush()

    def _finish(self, message: str, started: float) -> None:
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS(f"{message} in {time.monotonic() - started:.1f} s."))
