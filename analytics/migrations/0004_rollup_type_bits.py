from django.db import migrations, models

from analytics.migrations._rollup_restart import hold_the_rollup_lock, start_the_rollups_over


ROLLUP_MODELS = ("DailyEventRollup", "UserDayRollup", "UserDayActivity", "RollupDirtyItem",
                 "RollupDirtyDay")


TYPE_BITS_HELP = "Bit TYPE_BITS[t] set: the day held an event of type t"


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0003_user_activity_rollup"),
    ]

    operations = [
        migrations.RunPython(hold_the_rollup_lock, migrations.RunPython.noop),
        migrations.AddField(
            model_name="userdayactivity",
            name="type_bits",
            field=models.BigIntegerField(default=0, help_text=TYPE_BITS_HELP),
        ),
        migrations.AddField(
            model_name="userdayrollup",
            name="type_bits",
            field=models.BigIntegerField(default=0, help_text=TYPE_BITS_HELP),
        ),
        migrations.RunPython(start_the_rollups_over(*ROLLUP_MODELS), migrations.RunPython.noop),
    ]
