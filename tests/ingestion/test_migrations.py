"""What the migrations build in PostgreSQL beyond the model's fields: the covering indexes
the dashboards read events from without visiting the table, and the partial index the
sentiment sweep reads."""

import re

import pytest
from django.db import connection

from ingestion.models import HAS_SENTIMENT_TEXT, Event

COVERING = {
    "event_type_time": ("(type, \"timestamp\")", "INCLUDE (user_id, item_id)"),
    "event_item_time": ("(item_id, \"timestamp\")",
                        "INCLUDE (type, value, sentiment_label, user_id)"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(COVERING))
def test_the_event_indexes_the_dashboards_scan_cover_the_columns_they_read(name):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has no covering indexes")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [name])
        (definition,), = cursor.fetchall()
    key, included = COVERING[name]
    assert definition.endswith(f"{key} {included}")


@pytest.mark.django_db
def test_the_sentiment_sweep_finds_unscored_events_in_its_partial_index():
    if connection.vendor != "postgresql":
        pytest.skip("SQLite matches a partial index to literal values, not bound parameters")
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a test's table is tiny

    plan = Event.objects.filter(HAS_SENTIMENT_TEXT, sentiment_model="").explain()

    assert "event_unscored_text" in plan
    # The index alone: with the text-only index of migration 0008, PostgreSQL ORs it with
    # the (type, timestamp) index for the headlines.
    assert re.findall(r"Index (?:Only )?Scan (?:using|on) (\w+)", plan) == ["event_unscored_text"]
