import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("lodestar")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="default",
    task_queues=(Queue("default"), Queue("training")),
    task_routes={
        "recommender.tasks.train_recommender": {"queue": "training"},
        "recommender.tasks.train_sentiment": {"queue": "training"},
    },
    # A task is acknowledged only once it finished, so a worker that dies mid-task
    # hands it back to the broker instead of losing it.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    # A publish that finds the broker refusing connections fails at once instead of
    # retrying the connection for seconds inside a web request (the worker's and beat's own
    # reconnection loops pass their own limits). Sentiment scoring is then left to the
    # periodic sweep; a training job that could not be queued, to the job recovery.
    broker_transport_options={"max_retries": 0},
    beat_scheduler="django_celery_beat.schedulers:DatabaseScheduler",
    timezone="UTC",
)
app.autodiscover_tasks()
