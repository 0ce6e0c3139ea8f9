"""A statement that keeps the test database busy, for the tests of statement time limits."""

from django.db import connection

# About the rows SQLite counts through a second on this project's 2-core machines.
_SQLITE_ROWS_PER_SECOND = 2_000_000


def busy_statement(seconds: float) -> None:
    """Runs one statement that takes about `seconds` (on SQLite, roughly: it counts rows,
    and machines count at different rates)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_sleep(%s)", [seconds])
        else:
            cursor.execute("WITH RECURSIVE counted(n) AS (SELECT 1 UNION ALL SELECT n + 1 "
                           "FROM counted WHERE n < %s) SELECT COUNT(*) FROM counted",
                           [int(seconds * _SQLITE_ROWS_PER_SECOND)])
            cursor.fetchall()
