"""Default periodic tasks, kept in django-celery-beat's tables so admins edit, pause or
delete them in the Django admin.

Both the data migration (so `migrate` alone, as in Docker, installs them) and
`manage.py setup_schedules` call ensure_default_schedules; it looks schedules up by their
unique name, so running both never duplicates one nor undoes an admin's edit to it."""

import json

from django.apps import apps as installed_apps
from django.db import transaction
from django.utils import timezone

DEFAULT_SCHEDULES = (
    ("Nightly recommender retrain", "recommender.tasks.start_scheduled_training",
     ["recommender"], {"minute": "0", "hour": "2"}),
    ("Nightly sentiment retrain", "recommender.tasks.start_scheduled_training",
     ["sentiment"], {"minute": "30", "hour": "2"}),
)
SENTIMENT_SWEEP = "Score review events whose scoring was never queued"
ANALYTICS_ROLLUP = "Roll up new events for the dashboards"
# (name, task, every N minutes). The sweep scores the review events whose scoring task
# never reached the broker (it was down when they were stored), so an outage of Redis
# costs minutes of delay in sentiment, never a lost score.
INTERVAL_SCHEDULES = (
    ("Recover training jobs whose worker died",
     "recommender.tasks.recover_stale_training_jobs", 5),
    (SENTIMENT_SWEEP, "recommender.tasks.score_missed_sentiment", 2),
    # Dashboards add the events received since the last update from the raw table, so
    # this bounds how many raw events a dashboard reads, not how fresh it is.
    (ANALYTICS_ROLLUP, "analytics.tasks.roll_up_events", 1),
)


@transaction.atomic
def ensure_default_schedules(*, apps=installed_apps, only: set[str] | None = None) -> list[str]:
    """Creates the defaults that do not exist yet (of those named in `only`, if given) and
    returns their names. `apps` is a migration's historical registry when called from one."""
    periodic_task = apps.get_model("django_celery_beat", "PeriodicTask")
    crontab_schedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    interval_schedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    created = []
    for name, task, args, cron in DEFAULT_SCHEDULES:
        if (only is not None and name not in only) or \
                periodic_task.objects.filter(name=name).exists():
            continue
        crontab, _ = crontab_schedule.objects.get_or_create(
            day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC", **cron)
        periodic_task.objects.create(name=name, task=task, crontab=crontab,
                                     args=json.dumps(args))
        created.append(name)
    for name, task, minutes in INTERVAL_SCHEDULES:
        if (only is not None and name not in only) or \
                periodic_task.objects.filter(name=name).exists():
            continue
        interval, _ = interval_schedule.objects.get_or_create(every=minutes, period="minutes")
        periodic_task.objects.create(name=name, task=task, interval=interval)
        created.append(name)
    if created:
        # A running beat reloads its schedule only when this marker moves; the real
        # models move it from a save signal, historical ones in a migration do not.
        apps.get_model("django_celery_beat", "PeriodicTasks").objects.update_or_create(
            ident=1, defaults={"last_update": timezone.now()})
    return created
