"""Every insight test runs twice: on raw events, and on rollups holding every event stored
when the insight reads (rebuilt at each read, as the tests add events between reads)."""

from datetime import UTC, datetime

import pytest

FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["raw events", "rollups"], autouse=True)
def activity_source(request, monkeypatch):
    if request.param == "rollups":
        from analytics import services
        from analytics.insights import sources
        from analytics.models import RollupState

        def rolled_up_watermark():
            services.reset_rollups()
            services.roll_up_new_events(now=FAR_FUTURE)
            return RollupState.objects.get(pk=1).watermark

        monkeypatch.setattr(sources, "rollup_watermark", rolled_up_watermark)
    return request.param
