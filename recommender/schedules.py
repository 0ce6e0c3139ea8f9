"""Default periodic tasks, kept in django-celery-beat's tables so admins edit, pause or
delete them in the Django admin."""

import json

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

DEFAULT_SCHEDULES = (
    ("Nightly recommender retrain", "recommender.tasks.start_scheduled_training",
     ["recommender"], {"minute": "0", "hour": "2"}),
    ("Nightly sentiment retrain", "recommender.tasks.start_scheduled_training",
     ["sentiment"], {"minute": "30", "hour": "2"}),
)
RECOVERY_SCHEDULE = ("Recover training jobs whose worker died",
                     "recommender.tasks.recover_stale_training_jobs", 5)


@transaction.atomic
def ensure_default_schedules() -> list[str]:
    """Creates the defaults that do not exist yet; never overwrites an admin's edits.
    Returns the names created."""
    created = []
    for name, task, args, cron in DEFAULT_SCHEDULES:
        if PeriodicTask.objects.filter(name=name).exists():
            continue
        crontab, _ = CrontabSchedule.objects.get_or_create(
            day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC", **cron)
        PeriodicTask.objects.create(name=name, task=task, crontab=crontab, args=json.dumps(args))
        created.append(name)
    name, task, minutes = RECOVERY_SCHEDULE
    if not PeriodicTask.objects.filter(name=name).exists():
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=minutes, period=IntervalSchedule.MINUTES)
        PeriodicTask.objects.create(name=name, task=task, interval=interval)
        created.append(name)
    return created
