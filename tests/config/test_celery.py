"""The Celery app: what a lost worker or a stuck task does, and where training runs."""

from django.conf import settings

from config.celery import app


def test_a_task_is_acknowledged_only_after_it_ran_and_a_lost_worker_hands_it_back():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1


def test_only_json_crosses_the_broker():
    assert (app.conf.task_serializer, app.conf.result_serializer) == ("json", "json")
    assert list(app.conf.accept_content) == ["json"]


def test_default_queue_tasks_are_stopped_after_the_configured_limit():
    assert app.conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT
    assert app.conf.task_soft_time_limit == settings.CELERY_TASK_TIME_LIMIT - 30


def test_training_goes_to_its_own_queue_with_a_longer_limit():
    from recommender import tasks

    for task in (tasks.train_recommender, tasks.train_sentiment):
        assert app.conf.task_routes[task.name] == {"queue": "training"}
        assert task.time_limit == settings.CELERY_TRAINING_TIME_LIMIT > app.conf.task_time_limit
