"""Thin Celery wrappers: take ids, call a service, retry what is transient."""

import logging
from datetime import timedelta

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from celery.signals import worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError, close_old_connections
from django.utils import timezone

from recommender import services

logger = logging.getLogger(__name__)

TRANSIENT = (OperationalError, InterfaceError, ConnectionError)
# Starting and claiming jobs retry for well over an hour (each wait drawn up to a bound
# that doubles to five minutes): a database failover or a broker restart at 02:00 must
# not skip the nightly retraining, nor leave a task taken and acknowledged with its job
# never claimed.
PATIENT = {"autoretry_for": TRANSIENT, "retry_backoff": True, "retry_backoff_max": 300,
           "max_retries": 40}


class TrainingTask(Task):
    def on_failure(self, exc, task_id, args, kwargs, einfo):
        # Called in the worker's main process when the hard time limit is reached, before
        # the task's process is killed: an error raised here would spare the hung process.
        if isinstance(exc, TimeLimitExceeded) and args:
            try:
                close_old_connections()  # the main process's may be hours old
                services.fail_timed_out_job(job_id=args[0], task_id=task_id)
            except Exception:
                logger.exception("Job %s not marked failed at its time limit", args[0])


TRAINING = {**PATIENT, "base": TrainingTask, "time_limit": settings.CELERY_TRAINING_TIME_LIMIT,
            "soft_time_limit": settings.CELERY_TRAINING_TIME_LIMIT - 60}


@shared_task(bind=True, **TRAINING)
def train_recommender(self, job_id: int) -> str | None:
    job = services.run_training_job(job_id=job_id)
    return job.status if job else None


@shared_task(bind=True, **TRAINING)
def train_sentiment(self, job_id: int) -> str | None:
    job = services.run_training_job(job_id=job_id)
    return job.status if job else None


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=5)
def score_event_sentiment(event_pks: list[int]) -> int:
    from recommender.sentiment_scoring import score_events

    return score_events(event_pks=event_pks)


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=3)
def score_missed_sentiment() -> int:
    """The periodic sweep: reviews whose scoring task never ran. Those received in the last
    SENTIMENT_SWEEP_GRACE_SECONDS are left to the task queued for them (a worker further
    behind than that may run the model on a review twice; its score is stored once)."""
    from recommender.sentiment_scoring import backfill_missing_scores

    grace = timedelta(seconds=settings.SENTIMENT_SWEEP_GRACE_SECONDS)
    return backfill_missing_scores(received_before=timezone.now() - grace)


@shared_task(**PATIENT)
def start_scheduled_training(kind: str) -> int | None:
    """Beat's entry point: queue a job unless one of the kind is already active."""
    try:
        return services.start_training_job(kind=kind, started_by="schedule").pk
    except services.JobAlreadyActive:
        return None


@shared_task(autoretry_for=TRANSIENT, retry_backoff=True, max_retries=3)
def recover_stale_training_jobs() -> list[int]:
    return services.recover_stale_jobs()


@worker_ready.connect
def recover_jobs_on_worker_start(**kwargs) -> None:
    """A worker starting is often a worker restarting after a crash: look for the jobs a
    dead worker left behind now rather than at the next run of the recovery schedule."""
    recover_stale_training_jobs.delay()
