"""Reacts to ingestion: new events schedule a rollup update; items whose category changed,
and events an admin deletes or edits, get their rollup days rebuilt."""

import logging
import threading
import time

from django.conf import settings
from django.db.models import QuerySet
from django.dispatch import receiver

from analytics.services import mark_days_of_changing_events, mark_items_recategorised
from ingestion.signals import events_changing, events_stored, item_categories_changed

logger = logging.getLogger(__name__)

_last_scheduled = {"at": float("-inf")}
_schedule_lock = threading.Lock()


@receiver(item_categories_changed)
def mark_recategorised_items(sender, item_pks: list[int], **kwargs) -> None:
    mark_items_recategorised(item_pks=item_pks)


@receiver(events_changing)
def mark_days_of_events_changing(sender, events: QuerySet, **kwargs) -> None:
    mark_days_of_changing_events(events=events)


@receiver(events_stored)
def schedule_rollup(sender, count: int, **kwargs) -> None:
    """At most one update per process every ANALYTICS_ROLLUP_LAG_SECONDS, due when the new
    events have passed the watermark's lag (beat's run every minute covers the rest). A
    broker that is down must not fail or slow the ingestion response: one try, no retry."""
    from analytics.tasks import roll_up_events

    lag = settings.ANALYTICS_ROLLUP_LAG_SECONDS
    with _schedule_lock:
        if time.monotonic() - _last_scheduled["at"] < lag:
            return
        _last_scheduled["at"] = time.monotonic()
    try:
        roll_up_events.apply_async(countdown=lag + 1, retry=False)
    except Exception:
        logger.warning("Could not schedule a rollup update; beat's next run will do it",
                       exc_info=True)
