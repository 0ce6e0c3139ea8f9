"""The operations page for the rollups: watermark, lag, and an update on demand."""

import uuid
from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from analytics import services, tasks
from analytics.models import RollupDirtyDay, RollupState
from ingestion.services import EventInput, store_events

pytestmark = pytest.mark.django_db

PAGE = "/ops/analytics/rollups/"


def test_admins_see_the_watermark_lag_and_a_warning_when_the_worker_stopped(client, admin_user,
                                                                            settings):
    settings.ANALYTICS_ROLLUP_MAX_LAG_SECONDS = 600
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                    item_id="sku-1", timestamp=timezone.now())],
                 received_at=timezone.now() - timedelta(minutes=30))
    client.force_login(admin_user)

    waiting = client.get(PAGE).content.decode()
    assert "not built yet" in waiting and "more than 10 minutes" in waiting

    services.roll_up_new_events()
    caught_up = client.get(PAGE).content.decode()
    assert "not built yet" not in caught_up and "more than 10 minutes" not in caught_up
    assert "1 events in" in caught_up


def test_admins_see_when_the_recent_days_were_checked_and_how_many_days_wait(client, admin_user):
    client.force_login(admin_user)
    before = client.get(PAGE).content.decode()
    assert "against their events</th><td>never</td>" in before
    assert "Days waiting to be rebuilt</th><td>0</td>" in before

    services.roll_up_new_events(now=timezone.now())
    RollupDirtyDay.objects.create(day=timezone.localdate())

    page = client.get(PAGE).content.decode()
    checked = RollupState.objects.get().checked_at
    assert f"against their events</th><td>{timezone.localtime(checked):%Y-%m-%d %H:%M:%S}" in page
    assert "Days waiting to be rebuilt</th><td>1</td>" in page


def test_admins_see_which_property_keys_the_rollups_count(client, admin_user, settings):
    client.force_login(admin_user)
    assert "none: trends broken down by a property, or filtered on one" in client.get(
        PAGE).content.decode()

    settings.ANALYTICS_ROLLUP_PROPERTIES = ["plan", "$browser"]
    services.roll_up_new_events(now=timezone.now())

    assert "<code>plan</code>, <code>$browser</code>" in client.get(PAGE).content.decode()


def test_admins_see_which_property_keys_have_too_many_values_to_count(
        client, admin_user, settings):
    client.force_login(admin_user)
    settings.ANALYTICS_ROLLUP_PROPERTIES = ["plan", "order"]
    settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 2
    day = timezone.now() - timedelta(hours=2)
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                    item_id=None, timestamp=day,
                                    properties={"plan": "pro", "order": order})
                         for order in ("o1", "o2", "o3")],
                 received_at=timezone.now() - timedelta(minutes=30))
    services.roll_up_new_events(now=timezone.now())

    page = client.get(PAGE).content.decode()
    assert "<code>plan</code></td>" in page
    assert (f"Not counted: <code>order</code></th><td>3 values on "
            f"{timezone.localdate(day).isoformat()}, more than") in page


def test_update_now_queues_the_task(client, admin_user):
    client.force_login(admin_user)
    with mock.patch.object(tasks.roll_up_events, "apply_async") as queued:
        response = client.post(PAGE + "update/", follow=True)
    queued.assert_called_once_with(retry=False)
    assert "An update is queued" in response.content.decode()


def test_product_managers_and_visitors_are_kept_out(client, pm_user):
    assert client.get(PAGE).status_code == 302
    client.force_login(pm_user)
    assert client.get(PAGE).status_code == 403
    assert client.post(PAGE + "update/").status_code == 403
