from django.db import migrations, models

from analytics.migrations._rollup_restart import hold_the_rollup_lock, start_the_rollups_over


ROLLUP_MODELS = ("DailyEventRollup", "UserDayRollup", "UserDayActivity", "RollupDirtyItem",
                 "RollupDirtyDay")
# The per-user rollups as this migration names them, with their stale_path index's name.
PER_USER_ROLLUPS = {"userdayactivity": "user_day_activity_stale_path",
                    "userdayrollup": "user_day_rollup_stale_path"}
PATH_FIELDS = {
    "path": models.TextField(blank=True, null=True,
                             help_text="JSON array of event types in time order; NULL: stale"),
    "path_start_at": models.DateTimeField(blank=True, null=True,
                                          help_text="The row's first event's time"),
    "path_end_at": models.DateTimeField(blank=True, null=True,
                                        help_text="The row's last event's time"),
}


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0007_rollup_first_occurrences"),
    ]

    operations = [
        migrations.RunPython(hold_the_rollup_lock, migrations.RunPython.noop),
        # The rows rolled up so far lack their paths. Emptied first: the stale_path
        # indexes would otherwise be built over every row, all NULL.
        migrations.RunPython(start_the_rollups_over(*ROLLUP_MODELS), migrations.RunPython.noop),
        *[migrations.AddField(model_name=model_name, name=name, field=field.clone())
          for model_name in PER_USER_ROLLUPS for name, field in PATH_FIELDS.items()],
        *[migrations.AddIndex(model_name=model_name, index=models.Index(
            condition=models.Q(path__isnull=True), fields=["day"], name=index_name))
          for model_name, index_name in PER_USER_ROLLUPS.items()],
    ]
