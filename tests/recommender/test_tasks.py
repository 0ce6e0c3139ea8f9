"""The Celery tasks as the worker runs them (eager here): routing, scheduled starts,
recovery when a worker starts."""

from datetime import timedelta

import pytest
from celery.signals import worker_ready
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from config.celery import app
from recommender import services, tasks
from recommender.models import TrainingJob

pytestmark = pytest.mark.django_db

Status = TrainingJob.Status


@pytest.mark.parametrize("task, queue", [
    ("recommender.tasks.train_recommender", "training"),
    ("recommender.tasks.train_sentiment", "training"),
    ("recommender.tasks.start_scheduled_training", "default"),
    ("recommender.tasks.recover_stale_training_jobs", "default"),
    ("recommender.tasks.score_event_sentiment", "default"),
])
def test_training_runs_on_its_own_queue(task, queue):
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue


def test_a_started_job_is_enqueued_after_commit_with_its_task_id(
        monkeypatch, django_capture_on_commit_callbacks):
    sent = []

    class Result:
        id = "task-123"

    monkeypatch.setattr(tasks.train_sentiment, "delay",
                        lambda job_id: sent.append(job_id) or Result())

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = services.start_training_job(kind="sentiment", started_by="test")
    assert sent == []
    for callback in callbacks:
        callback()

    job.refresh_from_db()
    assert sent == [job.pk]
    assert job.celery_task_id == "task-123"


def test_the_training_task_runs_the_job(monkeypatch):
    from recommender import training

    def pipeline(reporter):
        raise services.NotEnoughData("nothing stored yet")

    monkeypatch.setitem(training.PIPELINES, "recommender", pipeline)
    job = services.start_training_job(kind="recommender", started_by="test", enqueue=False)

    assert tasks.train_recommender.apply(args=[job.pk]).get() == Status.FAILED


def test_a_starting_worker_recovers_jobs_a_dead_worker_left(monkeypatch):
    enqueued = []
    monkeypatch.setattr(services, "_enqueue", lambda job: enqueued.append(job.pk))
    job = services.start_training_job(kind="recommender", started_by="test", enqueue=False)
    long_ago = timezone.now() - timedelta(hours=1)
    TrainingJob.objects.filter(pk=job.pk).update(
        status=Status.RUNNING, attempts=2, started_at=long_ago, heartbeat_at=long_ago)

    worker_ready.send(sender=None)

    job.refresh_from_db()
    assert job.status == Status.FAILED


def test_starting_and_running_training_retry_through_an_hour_without_the_database():
    # A failover or a broker restart at 02:00: the nightly start must not be skipped, nor a
    # training task taken by a worker be acknowledged with its job never claimed.
    for task in (tasks.start_scheduled_training, tasks.train_recommender,
                 tasks.train_sentiment):
        assert set(task.autoretry_for) >= {OperationalError, InterfaceError}
        # Celery draws each wait between 0 and min(2**n, retry_backoff_max) seconds.
        bounds = [min(2 ** n, task.retry_backoff_max) for n in range(task.max_retries)]
        assert sum(bounds) / 2 >= 3600
