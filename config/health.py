"""Liveness and readiness for load balancers and orchestrators; open without authentication."""

from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.http import require_GET
from kombu import Connection

from analytics.services import rollup_status
from recommender.serving import loaded_versions


@require_GET
def healthz(request):
    return JsonResponse({"status": "ok"})


def _database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True
    except Exception:
        return False


def _migrations_applied() -> bool:
    """Whether the database holds every migration this code has: a process of a new
    release started before `migrate` ran would fail on the tables it changes. (A few
    milliseconds: the migration modules are imported once.)"""
    try:
        executor = MigrationExecutor(connection)
        return not executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception:  # a probe reports, never 500s
        return False


def _broker_ready() -> bool:
    # One attempt with a short timeout: probes run every few seconds and must answer
    # quickly, retrying is their job.
    try:
        with Connection(settings.CELERY_BROKER_URL, connect_timeout=2) as broker:
            broker.ensure_connection(max_retries=0, timeout=2)
        return True
    except Exception:
        return False


@require_GET
def readyz(request):
    """503 until the database answers with every migration applied, the broker answers
    and every model kind has something to serve (a trained version, or the documented
    fallback). Rollups behind by more than
    ANALYTICS_ROLLUP_MAX_LAG_SECONDS are reported, not failed: dashboards stay exact (they
    read the raw events not rolled up), and pulling web processes out of the load balancer
    would not bring a stopped worker back."""
    checks = {"database": _database_ready()}
    checks["migrations"] = checks["database"] and _migrations_applied()
    checks["broker"] = _broker_ready()
    models = loaded_versions() if checks["migrations"] else {}
    ready = all(checks.values()) and all(entry["loaded"] for entry in models.values())
    body = {"ready": ready, "checks": checks, "models": models}
    if checks["database"]:
        body["analytics"] = _rollup_health()
    return JsonResponse(body, status=200 if ready else 503)


def _rollup_health() -> dict:
    try:
        status = rollup_status(count_pending=False)
    except Exception as error:  # e.g. not migrated yet: a probe reports, never 500s
        return {"warning": f"Could not read the analytics rollups' state: {error}"}
    health = {"rollup_watermark": status["watermark"], "rollup_lag_seconds":
              round(status["lag_seconds"], 1)}
    if status["lagging"]:
        health["warning"] = (f"Events have waited {status['lag_seconds'] / 60:.0f} minutes for "
                             "the analytics rollups: is a Celery worker with beat running, "
                             "or a transaction writing events left open?")
    return health
