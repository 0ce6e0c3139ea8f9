"""Thin Celery wrappers around the rollup maintenance (analytics/services.py)."""

from celery import shared_task
from django.db import InterfaceError, OperationalError

from analytics import services

TRANSIENT = (OperationalError, InterfaceError, ConnectionError)
# A run stops after this long, so runs started every minute by beat never pile up; the
# next run goes on from the watermark.
ROLLUP_TIME_BUDGET_SECONDS = 50


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=3)
def roll_up_events() -> int:
    """Beat's (every minute) and ingestion's entry point; returns the events rolled up."""
    try:
        progress = services.roll_up_new_events(time_budget_seconds=ROLLUP_TIME_BUDGET_SECONDS)
    except services.RollupBusy:
        return 0  # another worker is on it
    return progress.events
