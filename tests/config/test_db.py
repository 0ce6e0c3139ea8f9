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


@pytest.mark.skipif(connection.vendor != "postgresql", reason="prepared statements: PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_after_a_column_type_change_only_one_request_fails():
    import psycopg
    from django.db import DatabaseError

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE prepared_probe (code varchar(10))")
        cursor.execute("INSERT INTO prepared_probe VALUES ('a')")
    sql = "SELECT code FROM prepared_probe WHERE code = %s"
    try:
        assert fetch_prepared(sql, ["a"]) == [("a",)]
        # A migration run by another process (`manage.py migrate` during a deploy) widens
        # the column while this web process holds the plan.
        with psycopg.connect(**connection.get_connection_params(), autocommit=True) as other:
            other.execute("ALTER TABLE prepared_probe ALTER COLUMN code TYPE text")

        with pytest.raises(DatabaseError):
            fetch_prepared(sql, ["a"])  # the plan prepared before the change
        assert fetch_prepared(sql, ["a"]) == [("a",)]  # a fresh connection plans again
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE prepared_probe")
