"""The date range every insight reads, and the settings its reads run with."""

import sqlite3
import time
from datetime import UTC, date, datetime

import pytest
from django.db import DatabaseError, connection

from analytics.insights import common
from analytics.insights.common import DateRange
from config.db import is_statement_timeout
from tests.database import busy_statement


pytestmark = pytest.mark.django_db


class TestDateRange:
    def test_covers_whole_days_and_knows_the_previous_period(self):
        week = DateRange(start=date(2026, 1, 8), end=date(2026, 1, 14))
        assert week.days == 7
        assert week.end_before == datetime(2026, 1, 15, tzinfo=UTC)
        assert week.previous() == DateRange(start=date(2026, 1, 1), end=date(2026, 1, 7))

    def test_default_is_the_last_30_days(self):
        default = common.default_date_range(today=date(2026, 3, 30))
        assert (default.start, default.end) == (date(2026, 3, 1), date(2026, 3, 30))


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL settings")
@pytest.mark.django_db(transaction=True)  # as in a request: the reads' own transaction
def test_dashboard_reads_plan_with_their_own_settings_and_leave_the_connection_as_it_was(
        settings):
    settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 2.5

    def setting(name: str) -> str:
        with connection.cursor() as cursor:
            cursor.execute(f"SHOW {name}")
            return cursor.fetchone()[0]

    with connection.cursor() as cursor:
        cursor.execute("SET work_mem = '256MB'")  # a server tuned for other work
    try:
        with common.analytics_queries():
            assert setting("work_mem") == common.ANALYTICS_WORK_MEM == "4MB"
            assert setting("jit") == "off"
            assert setting("transaction_isolation") == "repeatable read"
            assert setting("statement_timeout") == "2500ms"
        assert setting("work_mem") == "256MB"
        assert setting("statement_timeout") == "0"
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET work_mem")


@pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's own statement limit")
class TestSqliteStatementLimit:
    def test_a_statement_past_the_limit_is_stopped_as_postgresql_would_stop_it(self, settings):
        settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 0.05
        started = time.monotonic()
        with pytest.raises(DatabaseError) as stopped, common.analytics_queries():
            with common.analytics_queries():  # a nested block leaves the limit in place
                pass
            busy_statement(5)
        assert is_statement_timeout(stopped.value)
        assert time.monotonic() - started < 2

    def test_each_statement_has_the_whole_limit_and_other_reads_have_none(self, settings):
        settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 0.3
        with common.analytics_queries():
            busy_statement(0.05)
            time.sleep(0.4)  # the reads together run past the limit, no statement does
            busy_statement(0.05)
        time.sleep(0.4)
        busy_statement(0.05)  # outside the analytics reads: a handler left would stop it

    @pytest.mark.django_db(transaction=True)  # as in a request: the reads' own transaction
    def test_dashboard_reads_leave_the_write_lock_to_writers(self):
        writer = sqlite3.connect(connection.settings_dict["NAME"], timeout=0.2)
        try:
            with common.analytics_queries():
                busy_statement(0.01)
                writer.execute("BEGIN IMMEDIATE")  # "database is locked" if the reads held it
                writer.execute("ROLLBACK")
            assert connection.transaction_mode == "IMMEDIATE"  # the writers' mode is back
        finally:
            writer.close()

    def test_no_limit_where_it_is_zero(self, settings):
        settings.ANALYTICS_STATEMENT_TIMEOUT_SECONDS = 0
        with common.analytics_queries():
            busy_statement(0.3)
