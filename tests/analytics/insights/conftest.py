"""Every insight test runs twice: on raw events, and on rollups rebuilt at each read (the
tests add events between reads) over the earlier half of the events by received time, the
later half left to the raw tail."""

from datetime import UTC, datetime

import pytest

FAR_FUTURE = datetime(2999, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["raw events", "rollups"], autouse=True)
def activity_source(request, monkeypatch):
    if request.param == "rollups":
        from analytics import services
        from analytics.insights import sources
        from analytics.models import RollupState
        from ingestion.models import Event

        def rolled_up_watermark():
            services.reset_rollups()
            received = sorted(Event.objects.values_list("received_at", flat=True))
            cut = received[len(received) // 2] if received else FAR_FUTURE
            services.roll_up_new_events(now=cut + services._lag())
            return RollupState.objects.get(pk=1).watermark

        monkeypatch.setattr(sources, "rollup_watermark", rolled_up_watermark)
    return request.param
