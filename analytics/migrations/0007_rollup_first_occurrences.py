from django.db import migrations, models

from analytics.migrations._rollup_restart import hold_the_rollup_lock, start_the_rollups_over


ROLLUP_MODELS = ("DailyEventRollup", "UserDayRollup", "UserDayActivity", "RollupDirtyItem",
                 "RollupDirtyDay")
# The standard event types as TYPE_BITS names them at this migration.
EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "review")


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0006_rollup_user_unchecked"),
    ]

    operations = [
        migrations.RunPython(hold_the_rollup_lock, migrations.RunPython.noop),
        *[migrations.AddField(model_name=model_name, name=f"first_{event_type}_at",
                              field=models.DateTimeField(blank=True, null=True))
          for model_name in ("userdayactivity", "userdayrollup") for event_type in EVENT_TYPES],
        # The rows rolled up so far lack their first occurrences.
        migrations.RunPython(start_the_rollups_over(*ROLLUP_MODELS), migrations.RunPython.noop),
    ]
