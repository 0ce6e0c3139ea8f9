"""MODEL_STORE unwritable or full when a job saves its artifact: the job fails with an
error that says so, nothing is registered, no half-written artifact is left, and the
active version keeps serving."""

import resource

import pytest

from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    get_recommendations,
    register_model,
    serving,
    store_planted_data,
    trained_model,
    user_id,
)
from tests.services import RedisServer, celery_worker, require_postgresql

JOB_TIMEOUT = 240
# Above what a worker writes to its log before and during a job, below the size of a
# trained two-tower artifact (about 200 kB): the store "fills up" while the weights are
# written. A process over RLIMIT_FSIZE gets EFBIG from write(2) (Python ignores SIGXFSZ),
# the same failure path as ENOSPC from a full disk.
STORE_BYTES_LEFT = 100_000


def serving_version_name(client) -> str:
    return get_recommendations(client, user_id=user_id(0, 1), k=5)["model_version"]


def assert_nothing_registered_and_the_active_version_serves(active, client) -> None:
    from recommender.models import ModelVersion

    assert list(ModelVersion.objects.values_list("name", "status")) == [(active.name, "active")]
    assert serving_version_name(client) == active.name


@pytest.mark.django_db
def test_a_store_that_is_not_a_directory_fails_the_job_and_the_active_version_serves(
        serving, client_app, settings, tmp_path):
    from recommender.models import TrainingJob
    from recommender.services import run_training_job, start_training_job

    store_planted_data()
    active = register_model(trained_model(), name="recommender-serving")
    assert serving_version_name(client_app) == active.name
    blocker = tmp_path / "a-file"
    blocker.write_text("MODEL_STORE points under a regular file")
    settings.MODEL_STORE = blocker / "models"

    job = start_training_job(kind="recommender", started_by="test", enqueue=False)
    run_training_job(job_id=job.pk)

    job = TrainingJob.objects.get(pk=job.pk)
    assert job.status == "failed"
    assert "Could not save the recommender artifact" in job.error
    assert "Not a directory" in job.error and str(blocker) in job.error
    assert_nothing_registered_and_the_active_version_serves(active, client_app)


def limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (STORE_BYTES_LEFT, STORE_BYTES_LEFT))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_full_store_fails_the_job_in_the_worker_and_the_active_version_serves(
        serving, client_app, tmp_path):
    import time

    from recommender.models import TrainingJob
    from recommender.services import start_training_job

    # The worker's database must not be a file the size limit would also cut short.
    require_postgresql()
    store_planted_data()
    active = register_model(trained_model(), name="recommender-serving")
    assert serving_version_name(client_app) == active.name
    redis = RedisServer(tmp_path)
    redis.start()
    try:
        with celery_worker(broker_url=redis.url, run_dir=tmp_path / "worker",
                           env={"MODEL_STORE": str(serving)},
                           preexec_fn=limit_file_size) as worker:
            job = start_training_job(kind="recommender", started_by="test")
            deadline = time.monotonic() + JOB_TIMEOUT
            while (job := TrainingJob.objects.get(pk=job.pk)).status in ("queued", "running"):
                if time.monotonic() > deadline:
                    pytest.fail(f"Job still {job.status}:\n{job.log}\n{worker.output()[-3000:]}")
                time.sleep(0.1)
    finally:
        redis.stop()

    assert job.status == "failed", job.log
    assert "Could not save the recommender artifact" in job.error
    assert "File too large" in job.error
    assert sorted(p.name for p in (serving / "recommender").iterdir()) == [active.name]
    assert_nothing_registered_and_the_active_version_serves(active, client_app)
