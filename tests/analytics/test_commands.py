"""manage.py rebuild_analytics."""

import uuid
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone

from analytics import services
from analytics.models import DailyEventRollup, RollupState
from ingestion.services import EventInput, store_events

pytestmark = pytest.mark.django_db


def store_views(count: int, *, days_ago: int) -> None:
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id=f"u{n}",
                                    item_id="sku-1",
                                    timestamp=timezone.now() - timedelta(days=days_ago))
                         for n in range(count)],
                 received_at=timezone.now() - timedelta(hours=1))


def rebuild(*args: str) -> str:
    out = StringIO()
    call_command("rebuild_analytics", *args, stdout=out)
    return out.getvalue()


def test_a_full_rebuild_rolls_the_whole_log_up_again_with_a_progress_bar():
    store_views(3, days_ago=5)
    store_views(2, days_ago=1)
    services.roll_up_new_events()
    DailyEventRollup.objects.update(events=1000)  # damaged

    output = rebuild()

    assert "[" + "#" * 30 + "] 5/5 events" in output
    assert "Rolled up 5 events" in output
    assert sorted(DailyEventRollup.objects.values_list("events", flat=True)) == [2, 3]
    assert RollupState.objects.get().rebuilt_at is not None


def test_since_rebuilds_the_days_from_that_date_and_leaves_earlier_ones():
    store_views(3, days_ago=5)
    store_views(2, days_ago=1)
    services.roll_up_new_events()
    DailyEventRollup.objects.update(events=1000)

    output = rebuild("--since", (timezone.localdate() - timedelta(days=2)).isoformat())

    assert "Rebuilt 3 days" in output
    assert sorted(DailyEventRollup.objects.values_list("events", flat=True)) == [2, 1000]


def test_remake_day_statistics_names_the_new_time_zone(settings):
    from django.db import connection

    settings.TIME_ZONE = "Europe/Paris"
    out = StringIO()

    call_command("remake_day_statistics", stdout=out)

    if connection.vendor != "postgresql":
        assert "only PostgreSQL keeps these statistics" in out.getvalue()
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT unnest(pg_get_statisticsobjdef_expressions(oid)) "
                       "FROM pg_statistic_ext WHERE stxname = 'analytics_event_day'")
        expressions = [expression for expression, in cursor.fetchall()]
    assert len(expressions) == 1 and "Europe/Paris" in expressions[0]
    assert "remade for Europe/Paris" in out.getvalue()
