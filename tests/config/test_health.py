"""/healthz says the process answers; /readyz whether it can serve: database with every
migration applied, broker and each model kind's active version loaded (or its documented
fallback)."""

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from ingestion.services import EventInput, store_events
from recommender import serving
from recommender.artifacts import artifact_directory, directory_checksum
from recommender.models import ModelVersion

pytestmark = pytest.mark.django_db


@pytest.fixture
def fresh_registry(settings, model_store):
    # A broker that needs no server, so these tests are about readiness, not Redis.
    settings.CELERY_BROKER_URL = "memory://"
    serving.registry.reset()
    yield serving.registry
    serving.registry.reset()


def test_healthz_answers_without_authentication(anonymous):
    response = anonymous.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_on_the_fallbacks_when_nothing_is_trained(anonymous, fresh_registry):
    response = anonymous.get("/readyz")

    assert response.status_code == 200
    body = response.json()
    assert body["ready"] is True
    assert body["checks"] == {"database": True, "migrations": True, "broker": True}
    assert body["models"]["recommender"]["serving"] == "popular"
    assert body["models"]["sentiment"]["serving"] == "vader"


def test_not_ready_quickly_when_the_broker_is_down(anonymous, fresh_registry, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"

    started = time.monotonic()
    response = anonymous.get("/readyz")

    assert time.monotonic() - started < 5
    assert response.status_code == 503
    assert response.json()["ready"] is False
    assert response.json()["checks"] == {"database": True, "migrations": True, "broker": False}


def test_not_ready_until_every_migration_of_this_release_is_applied(anonymous,
                                                                   fresh_registry):
    from django.db import connection
    from django.db.migrations.loader import MigrationLoader
    from django.db.migrations.recorder import MigrationRecorder

    # As if this release's newest analytics migration had not been run yet.
    newest = next(node for node in MigrationLoader(connection).graph.leaf_nodes()
                  if node[0] == "analytics")
    MigrationRecorder(connection).record_unapplied(*newest)

    response = anonymous.get("/readyz")

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": True, "migrations": False,
                                         "broker": True}


def test_not_ready_when_the_active_artifact_is_corrupt(anonymous, fresh_registry):
    directory = artifact_directory(kind="sentiment", name="sentiment-1")
    directory.mkdir(parents=True)
    (directory / "model.keras").write_bytes(b"trained weights")
    checksum = directory_checksum(directory)
    (directory / "model.keras").write_bytes(b"flipped bits")
    ModelVersion.objects.create(kind="sentiment", name="sentiment-1", status="active",
                                artifact_path=str(directory), checksum=checksum)

    response = anonymous.get("/readyz")

    assert response.status_code == 503
    sentiment = response.json()["models"]["sentiment"]
    assert sentiment["loaded"] is False
    assert "sentiment-1" in sentiment["error"] and "checksum" in sentiment["error"]


def test_probes_answer_only_get(anonymous):
    assert anonymous.post("/healthz").status_code == 405


def test_ready_reports_rollups_that_fell_behind_without_failing(anonymous, fresh_registry,
                                                                settings):
    settings.ANALYTICS_ROLLUP_MAX_LAG_SECONDS = 600
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                    item_id="sku-1", timestamp=timezone.now())],
                 received_at=timezone.now() - timedelta(minutes=15))

    response = anonymous.get("/readyz")

    assert response.status_code == 200
    analytics = response.json()["analytics"]
    assert analytics["rollup_lag_seconds"] > 14 * 60
    assert "15 minutes" in analytics["warning"]
