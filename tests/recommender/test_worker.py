"""A training job end to end through a real Celery worker process on the configured
Redis broker, against the test database: progress arrives epoch by epoch, a version is
registered, and a cancel request stops a running job.

Skipped when the broker is not a reachable Redis, unless LODESTAR_REQUIRE_SERVICES=1 (CI),
where that is a failure."""

import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parents[2]
WORKER_START_TIMEOUT = 90
JOB_TIMEOUT = 180
CLUSTERS, USERS_PER_CLUSTER, ITEMS_PER_CLUSTER, EVENTS_PER_USER = 3, 10, 15, 12


def _redis_reachable(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as broker:
            broker.ensure_connection(max_retries=0, timeout=2)
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def broker_url() -> str:
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")) and _redis_reachable(url):
        return url
    reason = f"needs a reachable Redis broker (CELERY_BROKER_URL is {url!r})"
    if os.environ.get("LODESTAR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"LODESTAR_REQUIRE_SERVICES=1 but the worker test {reason}")
    pytest.skip(reason)


def _database_url(settings_dict: dict) -> str:
    """DATABASE_URL for the test database pytest-django created, for the worker."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    credentials = quote(settings_dict["USER"] or "", safe="")
    if settings_dict.get("PASSWORD"):
        credentials += ":" + quote(settings_dict["PASSWORD"], safe="")
    host = settings_dict["HOST"] or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{settings_dict['NAME']}"


@pytest.fixture(scope="module")
def worker(broker_url, django_db_setup, tmp_path_factory):
    """`celery worker` on both queues, solo pool, on the test database; always stopped."""
    from django.db import connection

    from config.celery import app

    run_dir = tmp_path_factory.mktemp("worker")
    log_path = run_dir / "worker.log"
    env = {**os.environ,
           "DJANGO_SETTINGS_MODULE": "config.settings.local",
           "DATABASE_URL": _database_url(connection.settings_dict),
           "CELERY_BROKER_URL": broker_url,
           "CELERY_TASK_ALWAYS_EAGER": "false",
           "MODEL_STORE": str(run_dir / "models"),
           "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,training",
             "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
             "-n", f"test-{uuid.uuid4().hex[:8]}@%h"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    # This process only sends tasks; the test settings would otherwise run them inline.
    was_eager = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while " ready." not in log_path.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The worker did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.2)
        yield {"log": log_path, "model_store": run_dir / "models"}
    finally:
        app.conf.task_always_eager = was_eager
        # Cold shutdown: a warm one would wait for a training task to finish.
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def seed_clustered_interactions() -> None:
    """Users who interact almost only within their own cluster of items, so the model has
    structure to learn."""
    from ingestion.models import EndUser, Event, Item

    rng = random.Random(3)
    Item.objects.bulk_create([
        Item(item_id=f"c{c}-i{j}", category=f"cat{c}", title=f"cluster {c} thing {j}")
        for c in range(CLUSTERS) for j in range(ITEMS_PER_CLUSTER)])
    EndUser.objects.bulk_create([EndUser(user_id=f"u{c}-{u}") for c in range(CLUSTERS)
                                 for u in range(USERS_PER_CLUSTER)])
    users = dict(EndUser.objects.values_list("user_id", "pk"))
    items = dict(Item.objects.values_list("item_id", "pk"))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = []
    for c in range(CLUSTERS):
        for u in range(USERS_PER_CLUSTER):
            for position, j in enumerate(rng.sample(range(ITEMS_PER_CLUSTER), EVENTS_PER_USER)):
                stamp = start + timedelta(hours=c * 1000 + u * 20 + position)
                events.append(Event(type="view", user_id=users[f"u{c}-{u}"],
                                    item_id=items[f"c{c}-i{j}"], timestamp=stamp,
                                    received_at=stamp))
    Event.objects.bulk_create(events)


def wait_for(job_id: int, worker, *, statuses: tuple[str, ...], timeout: float = JOB_TIMEOUT):
    from recommender.models import TrainingJob

    deadline = time.monotonic() + timeout
    while True:
        job = TrainingJob.objects.get(pk=job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"Job #{job_id} still {job.status} after {timeout} s.\nJob log:\n"
                        f"{job.log}\nWorker log:\n{worker['log'].read_text()[-4000:]}")
        time.sleep(0.1)


def test_a_job_runs_to_a_registered_version_with_live_progress(worker):
    from recommender.models import ModelVersion
    from recommender.services import start_training_job

    seed_clustered_interactions()
    job = start_training_job(kind="recommender", started_by="test")

    running = wait_for(job.pk, worker, statuses=("running", "succeeded", "failed"))
    job = wait_for(job.pk, worker, statuses=("succeeded", "failed", "cancelled"))

    assert job.status == "succeeded", f"{job.error}\n{worker['log'].read_text()[-4000:]}"
    assert running.started_at is not None and job.celery_task_id
    epochs = [entry["epoch"] for entry in job.progress]
    assert epochs == list(range(1, len(epochs) + 1)) and epochs
    assert all(isinstance(entry["loss"], float) for entry in job.progress)
    assert job.data_counts["users"] == CLUSTERS * USERS_PER_CLUSTER
    version = ModelVersion.objects.get(pk=job.model_version_id)
    assert {"hr@10", "ndcg@10", "recall@50", "coverage"} <= set(version.metrics)
    assert "popularity" in version.baseline_metrics
    assert (worker["model_store"] / "recommender" / version.name).is_dir()
    assert "Registered" in job.log


def test_a_cancelled_running_job_stops_and_is_marked_cancelled(worker):
    from recommender.models import ModelVersion
    from recommender.services import request_cancel, start_training_job

    seed_clustered_interactions()
    job = start_training_job(kind="recommender", started_by="test")
    job = wait_for(job.pk, worker, statuses=("running", "succeeded", "failed", "cancelled"))
    assert job.status == "running"

    request_cancel(job_id=job.pk, actor="admin:test")
    job = wait_for(job.pk, worker, statuses=("succeeded", "failed", "cancelled"))

    assert job.status == "cancelled", job.log
    assert "Cancelled at the next batch" in job.log
    assert not ModelVersion.objects.exists()
