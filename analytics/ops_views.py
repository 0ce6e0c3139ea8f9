"""The operations page for the dashboards' rollups (admins only)."""

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from accounts.permissions import staff_required
from analytics import services, tasks


@require_GET
@staff_required
def rollups(request):
    return render(request, "ops/rollups.html", {
        "status": services.rollup_status(),
        "max_lag_minutes": settings.ANALYTICS_ROLLUP_MAX_LAG_SECONDS // 60,
        "lag_seconds": settings.ANALYTICS_ROLLUP_LAG_SECONDS,
        "enabled": settings.ANALYTICS_USE_ROLLUPS,
    })


@require_POST
@staff_required
def roll_up_now(request):
    try:
        tasks.roll_up_events.apply_async(retry=False)
    except Exception as error:  # the broker is down: say so instead of a 500
        messages.error(request, f"Could not queue the update: {error}")
    else:
        messages.success(request, "An update is queued; a worker rolls up what has arrived.")
    return redirect("ops-analytics:rollups")
