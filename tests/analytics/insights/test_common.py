"""The date range every insight reads."""

from datetime import UTC, date, datetime

import pytest

from analytics.insights import common
from analytics.insights.common import DateRange


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
