"""Prepared statements for the few queries that run on every API request, a lock held to
the end of a transaction, and telling a statement stopped by its time limit from other
database errors."""

from collections.abc import Sequence

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models import Model


def fetch_prepared(sql: str, params: Sequence) -> list[tuple]:
    """The rows of ``sql`` (``%s`` placeholders). On PostgreSQL it runs as a server-side
    prepared statement: each connection plans it once, where planning these short indexed
    queries took longer than running them (they bypass Django's cursor wrappers, so they
    are missing from ``connection.queries`` there). Elsewhere, a plain cursor."""
    if connection.vendor != "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()
    import psycopg

    connection.ensure_connection()
    try:
        # Django's cursors bind parameters client-side (no prepared statements); a psycopg
        # Cursor on the same connection binds them server-side and keeps the plan.
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(sql, params, prepare=True)
            return cursor.fetchall()
    except DatabaseError:
        if not connection.in_atomic_block:
            # A plan kept from before a migration changed a column's type fails on every
            # later run ("cached plan must not change result type"): the next request
            # gets a new connection, with nothing prepared, instead of the same error.
            connection.close()
        raise


def lock_until_commit(*keys: int, sqlite_table_of: type[Model]) -> None:
    """Makes the transactions that call this with the same keys (one bigint, or two ints)
    take turns, each holding the lock until it commits or rolls back. PostgreSQL: an
    advisory transaction lock. SQLite: a write that changes nothing to the model's table
    takes the database's write lock now, before the caller's reads, so a concurrent caller
    waits here (its busy timeout) instead of failing at its own first write."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SELECT pg_advisory_xact_lock({', '.join(['%s'] * len(keys))})",
                           list(keys))
        else:
            table = connection.ops.quote_name(sqlite_table_of._meta.db_table)
            key = connection.ops.quote_name(sqlite_table_of._meta.pk.column)
            cursor.execute(f"UPDATE {table} SET {key} = {key} WHERE 1 = 0")


def is_statement_timeout(error: BaseException) -> bool:
    """Whether a database error is a statement stopped by ANALYTICS_STATEMENT_TIMEOUT_SECONDS
    (analytics.insights.common.analytics_queries): PostgreSQL cancelling it (SQLSTATE
    57014), or SQLite interrupting it (SQLITE_INTERRUPT: that limit's progress handler is
    the only thing in Lodestar that interrupts SQLite)."""
    cause = error.__cause__
    return isinstance(error, DatabaseError) and (
        getattr(cause, "sqlstate", None) == "57014"
        or getattr(cause, "sqlite_errorname", None) == "SQLITE_INTERRUPT")


def statement_timeout_message() -> str:
    return (f"This analysis ran longer than {settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS:g} s "
            "and was stopped, so that it does not slow down the rest of Lodestar: choose a "
            "shorter date range or a filter.")


def close_if_broken() -> None:
    """Closes this thread's connection where an error left it unusable (a failover, a
    connection the server or a network device dropped), so the next query opens a new one.
    Outside a request or a task boundary nothing else does, and every later query on the
    broken connection would fail too."""
    if connection.connection is not None and connection.errors_occurred \
            and not connection.is_usable():
        connection.close()
