"""A worker killed with SIGKILL in the middle of a training job: the job is re-queued and
finishes on a second worker, the active model answers recommendations throughout, and the
killed attempt registers nothing."""

import threading
import time

import pytest

from tests.recommender.planted import (  # noqa: F401  (serving is a fixture)
    register_model,
    serving,
    store_planted_data,
    trained_model,
    user_id,
)
from tests.services import RedisServer, celery_worker

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# Short enough that the second worker sees the first one's job as abandoned within seconds,
# long enough that the live worker's heartbeat thread (every quarter of it) never misses.
HEARTBEAT_TIMEOUT_SECONDS = 4
JOB_TIMEOUT = 240


class RecommendationProbe(threading.Thread):
    """Asks for recommendations every 50 ms while the job is being killed and recovered;
    records every status and the version that answered."""

    def __init__(self, api_key: str):
        super().__init__(daemon=True)
        self.api_key = api_key
        self.answers: list[tuple[int, str | None]] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        from django.db import connection
        from rest_framework.test import APIClient

        client = APIClient(HTTP_AUTHORIZATION=f"Api-Key {self.api_key}")
        try:
            while not self.stopped.wait(0.05):
                response = client.get("/api/v1/recommendations",
                                      {"user_id": user_id(0, 1), "k": 5})
                version = response.json().get("model_version") \
                    if response.status_code == 200 else None
                self.answers.append((response.status_code, version))
        finally:
            connection.close()


def wait_for_job(job_id: int, *, done, timeout: float, logs: list) -> object:
    from recommender.models import TrainingJob

    deadline = time.monotonic() + timeout
    while True:
        job = TrainingJob.objects.get(pk=job_id)
        if done(job):
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"Job #{job_id} is {job.status} after {timeout} s.\nJob log:\n{job.log}\n"
                        + "\n".join(log()[-3000:] for log in logs))
        time.sleep(0.05)


@pytest.fixture
def redis_server(tmp_path):
    """A broker of this test's own: the killed worker's unacknowledged task stays in it,
    out of every other test's way."""
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def test_a_job_whose_worker_is_killed_finishes_on_another_worker(serving, api_key,
                                                                  redis_server, tmp_path):
    from django.utils import timezone

    from recommender.models import ModelVersion
    from recommender.services import start_training_job

    broker_url = redis_server.url
    active = register_model(trained_model(), name="recommender-before-the-crash")
    store_planted_data()
    env = {"MODEL_STORE": str(serving),
           "TRAINING_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_SECONDS)}
    probe = RecommendationProbe(api_key)
    probe.start()
    try:
        with celery_worker(broker_url=broker_url, run_dir=tmp_path / "first", env=env) as first:
            job = start_training_job(kind="recommender", started_by="test")
            # Killed once the job trains: claimed, data read, at least one epoch reported.
            wait_for_job(job.pk, done=lambda j: bool(j.progress) or
                         j.status not in ("queued", "running"),
                         timeout=JOB_TIMEOUT, logs=[first.output])
            first.kill()
        killed = wait_for_job(job.pk, done=lambda j: True, timeout=1, logs=[])
        assert killed.status == "running" and killed.attempts == 1, killed.log
        assert not ModelVersion.objects.exclude(pk=active.pk).exists()
        # The second worker looks for abandoned jobs as it starts; by then this one's
        # heartbeat must have gone stale, as it would after any real crash.
        silent_for = (timezone.now() - killed.heartbeat_at).total_seconds()
        time.sleep(max(0.0, HEARTBEAT_TIMEOUT_SECONDS + 0.5 - silent_for))

        with celery_worker(broker_url=broker_url, run_dir=tmp_path / "second",
                           env=env) as second:
            job = wait_for_job(job.pk, done=lambda j: j.status in ("succeeded", "failed"),
                               timeout=JOB_TIMEOUT, logs=[second.output])
            worker_output = second.output()
    finally:
        probe.stopped.set()
        probe.join()

    assert job.status == "succeeded", f"{job.error}\n{worker_output[-4000:]}"
    assert job.attempts == 2
    assert "re-queued" in job.log and "Started (attempt 2)" in job.log
    registered = ModelVersion.objects.exclude(pk=active.pk)
    assert list(registered.values_list("pk", flat=True)) == [job.model_version_id]
    assert probe.answers, "no recommendation was asked for"
    failures = [status for status, _ in probe.answers if status != 200]
    assert failures == [], f"{len(failures)} of {len(probe.answers)} requests failed"
    versions = {version for _, version in probe.answers}
    assert versions <= {active.name, registered.get().name}
    assert active.name in versions
