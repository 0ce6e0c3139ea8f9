"""The rollup task beat runs every minute, and the one ingestion schedules."""

import uuid
from datetime import timedelta
from importlib import import_module
from unittest import mock

import pytest
from django.apps import apps
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from analytics import receivers, services, tasks
from analytics.models import DailyEventRollup
from config.celery import app
from ingestion.services import EventInput, store_events
from recommender.schedules import ANALYTICS_ROLLUP

pytestmark = pytest.mark.django_db


def test_the_task_rolls_up_what_arrived_and_a_busy_rollup_is_left_alone(monkeypatch):
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                    item_id="sku-1", timestamp=timezone.now())],
                 received_at=timezone.now() - timedelta(minutes=10))

    assert tasks.roll_up_events() == 1
    assert DailyEventRollup.objects.get().events == 1

    def busy(**kwargs):
        raise services.RollupBusy("another worker")

    monkeypatch.setattr(services, "roll_up_new_events", busy)
    assert tasks.roll_up_events() == 0


def test_beat_runs_it_every_minute_and_the_migration_restores_no_deleted_schedule():
    schedule = PeriodicTask.objects.get(name=ANALYTICS_ROLLUP)
    assert schedule.task == "analytics.tasks.roll_up_events" in app.tasks
    assert (schedule.interval.every, schedule.interval.period) == (1, "minutes")

    PeriodicTask.objects.all().delete()
    import_module("analytics.migrations.0002_rollup_schedule").install_rollup_schedule(apps, None)
    assert list(PeriodicTask.objects.values_list("name", flat=True)) == [ANALYTICS_ROLLUP]


def test_stored_batches_schedule_one_update_per_lag_due_once_past_the_watermark(
        settings, monkeypatch, django_capture_on_commit_callbacks):
    settings.ANALYTICS_ROLLUP_LAG_SECONDS = 60
    monkeypatch.setitem(receivers._last_scheduled, "at", float("-inf"))
    batch = [EventInput(event_id=uuid.uuid4(), type="view", user_id="ann", item_id="sku-1",
                        timestamp=timezone.now())]
    with mock.patch.object(tasks.roll_up_events, "apply_async") as schedule:
        with django_capture_on_commit_callbacks(execute=True):
            store_events(events=batch, received_at=timezone.now())
        with django_capture_on_commit_callbacks(execute=True):
            store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="bob",
                                            item_id="sku-1", timestamp=timezone.now())],
                         received_at=timezone.now())

    schedule.assert_called_once_with(countdown=61, retry=False)


def test_a_broker_that_is_down_does_not_fail_ingestion(monkeypatch, django_capture_on_commit_callbacks):
    monkeypatch.setitem(receivers._last_scheduled, "at", float("-inf"))
    with mock.patch.object(tasks.roll_up_events, "apply_async",
                           side_effect=ConnectionRefusedError("broker down")):
        with django_capture_on_commit_callbacks(execute=True):
            stored = store_events(events=[EventInput(
                event_id=uuid.uuid4(), type="view", user_id="ann", item_id="sku-1",
                timestamp=timezone.now())], received_at=timezone.now())
    assert len(stored) == 1
