"""A training job end to end through a real Celery worker process on the configured
Redis broker, against the test database: progress arrives epoch by epoch, a version is
registered, and a cancel request stops a running job.

Skipped when the broker is not a reachable Redis, unless LODESTAR_REQUIRE_SERVICES=1 (CI),
where that is a failure."""

import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.services import celery_worker, configured_redis_broker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

JOB_TIMEOUT = 180
CLUSTERS, USERS_PER_CLUSTER, ITEMS_PER_CLUSTER, EVENTS_PER_USER = 3, 10, 15, 12


@pytest.fixture(scope="module")
def worker(django_db_setup, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("worker")
    with celery_worker(broker_url=configured_redis_broker(), run_dir=run_dir) as process:
        yield {"log": process.log, "model_store": run_dir / "models"}


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
