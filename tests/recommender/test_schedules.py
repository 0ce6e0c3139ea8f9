"""Default schedules in django-celery-beat's tables: installed by the data migration and
`setup_schedules` without duplicates, editable in the admin, and the retrain task beat
runs."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from config.celery import app
from recommender.models import TrainingJob
from recommender.schedules import (
    DEFAULT_SCHEDULES,
    INTERVAL_SCHEDULES,
    SENTIMENT_SWEEP,
    ensure_default_schedules,
)

pytestmark = pytest.mark.django_db

DEFAULT_NAMES = {name for name, *_ in (*DEFAULT_SCHEDULES, *INTERVAL_SCHEDULES)}
RECOMMENDER_RETRAIN = "Nightly recommender retrain"


def setup_schedules() -> str:
    out = StringIO()
    call_command("setup_schedules", stdout=out)
    return out.getvalue()


def test_the_migration_installed_the_defaults():
    assert set(PeriodicTask.objects.values_list("name", flat=True)) >= DEFAULT_NAMES


def test_setup_schedules_creates_the_defaults_once():
    PeriodicTask.objects.all().delete()

    assert "Nightly recommender retrain" in setup_schedules()
    assert "exist already" in setup_schedules()

    assert PeriodicTask.objects.filter(name__in=DEFAULT_NAMES).count() == 5
    retrain = PeriodicTask.objects.get(name=RECOMMENDER_RETRAIN)
    assert retrain.task == "recommender.tasks.start_scheduled_training"
    assert json.loads(retrain.args) == ["recommender"]
    assert (retrain.crontab.minute, retrain.crontab.hour) == ("0", "2")
    assert retrain.enabled


def test_the_sweep_migration_brings_back_no_schedule_an_admin_deleted():
    from importlib import import_module

    from django.apps import apps

    PeriodicTask.objects.all().delete()
    migration = import_module("recommender.migrations.0004_sentiment_sweep_schedule")

    migration.install_sentiment_sweep(apps, None)

    assert list(PeriodicTask.objects.values_list("name", "task")) == [
        (SENTIMENT_SWEEP, "recommender.tasks.score_missed_sentiment")]


def test_an_admins_edits_survive_setup_schedules():
    retrain = PeriodicTask.objects.get(name=RECOMMENDER_RETRAIN)
    retrain.enabled = False
    retrain.crontab = CrontabSchedule.objects.create(minute="15", hour="4", day_of_week="0")
    retrain.save()

    assert ensure_default_schedules() == []

    retrain.refresh_from_db()
    assert not retrain.enabled
    assert (retrain.crontab.minute, retrain.crontab.hour, retrain.crontab.day_of_week) == (
        "15", "4", "0")


class TestAdmin:
    def test_admins_pause_a_schedule_from_the_admin(self, client, admin_user):
        client.force_login(admin_user)
        retrain = PeriodicTask.objects.get(name=RECOMMENDER_RETRAIN)

        changelist = "/admin/django_celery_beat/periodictask/"
        assert client.get(changelist).status_code == 200
        assert client.get(f"{changelist}{retrain.pk}/change/").status_code == 200
        response = client.post(changelist, {"action": "disable_tasks",
                                            "_selected_action": [retrain.pk]})

        assert response.status_code == 302
        retrain.refresh_from_db()
        assert not retrain.enabled

    def test_admins_add_a_schedule_and_change_its_time_in_the_admin(self, client, admin_user):
        client.force_login(admin_user)
        nightly = CrontabSchedule.objects.create(minute="30", hour="3")
        weekly = CrontabSchedule.objects.create(minute="0", hour="5", day_of_week="1")
        form = {"name": "Extra sentiment retrain",
                "regtask": "recommender.tasks.start_scheduled_training", "task": "",
                "crontab": nightly.pk, "args": '["sentiment"]', "kwargs": "{}",
                "enabled": "on", "headers": "{}", "priority": "", "expire_seconds": "",
                "queue": "", "exchange": "", "routing_key": "", "description": "",
                "start_time_0": "", "start_time_1": "", "expires_0": "", "expires_1": ""}

        added = client.post("/admin/django_celery_beat/periodictask/add/", form)
        task = PeriodicTask.objects.get(name="Extra sentiment retrain")
        changed = client.post(f"/admin/django_celery_beat/periodictask/{task.pk}/change/",
                              {**form, "crontab": weekly.pk})

        assert (added.status_code, changed.status_code) == (302, 302)
        task.refresh_from_db()
        assert task.crontab == weekly and json.loads(task.args) == ["sentiment"]
        job = TrainingJob.objects.get(pk=run_as_beat_would("Extra sentiment retrain"))
        assert (job.kind, job.started_by) == ("sentiment", "schedule")

    def test_admins_delete_a_schedule_from_the_admin(self, client, admin_user):
        client.force_login(admin_user)
        retrain = PeriodicTask.objects.get(name=RECOMMENDER_RETRAIN)

        response = client.post(f"/admin/django_celery_beat/periodictask/{retrain.pk}/delete/",
                               {"post": "yes"})

        assert response.status_code == 302
        assert not PeriodicTask.objects.filter(pk=retrain.pk).exists()

    def test_product_managers_cannot_open_the_schedules(self, client, pm_user):
        client.force_login(pm_user)

        response = client.get("/admin/django_celery_beat/periodictask/")

        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def run_as_beat_would(name: str):
    """Runs the task a periodic task names, with its arguments, as beat sends it."""
    periodic = PeriodicTask.objects.get(name=name)
    return app.tasks[periodic.task].apply(args=json.loads(periodic.args)).get()


def test_the_nightly_retrain_queues_a_job():
    job_id = run_as_beat_would(RECOMMENDER_RETRAIN)

    job = TrainingJob.objects.get(pk=job_id)
    assert (job.kind, job.status, job.started_by) == ("recommender", "queued", "schedule")


def test_the_nightly_retrain_skips_while_a_job_of_the_kind_is_active():
    first = run_as_beat_would(RECOMMENDER_RETRAIN)
    TrainingJob.objects.filter(pk=first).update(status=TrainingJob.Status.RUNNING)

    assert run_as_beat_would(RECOMMENDER_RETRAIN) is None
    assert TrainingJob.objects.count() == 1
