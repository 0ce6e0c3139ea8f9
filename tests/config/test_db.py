"""Per-request queries: the same rows on every database; prepared once per PostgreSQL
connection, so a busy server does not re-plan them on every request."""

import pytest
from django.db import connection

from config.db import fetch_prepared
from ingestion.models import Item

pytestmark = pytest.mark.django_db


def test_rows_come_back_in_query_order():
    for name in ("b", "a", "c"):
        Item.objects.create(item_id=f"prep-{name}", title=name.upper(), category="x")

    rows = fetch_prepared("SELECT item_id, title FROM ingestion_item WHERE category = %s "
                          "AND item_id <> %s ORDER BY item_id", ["x", "prep-c"])

    assert rows == [("prep-a", "A"), ("prep-b", "B")]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
def test_postgresql_plans_a_request_query_once_per_connection():
    Item.objects.create(item_id="prep-1", title="One", category="x")
    sql = "SELECT title FROM ingestion_item WHERE item_id = %s"

    for _ in range(3):
        assert fetch_prepared(sql, ["prep-1"]) == [("One",)]

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements "
                       "WHERE statement LIKE %s", ["%FROM ingestion_item WHERE item_id = $1%"])
        assert cursor.fetchone()[0] == 1
