import django.db.models.deletion
from django.db import migrations, models

from analytics.migrations._rollup_restart import hold_the_rollup_lock, start_the_rollups_over


ROLLUP_MODELS = ("DailyEventRollup", "UserDayRollup", "UserDayActivity", "RollupDirtyItem",
                 "RollupDirtyDay")


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0002_rollup_schedule"),
        ("ingestion", "0006_covering_analytics_indexes"),
    ]

    operations = [
        migrations.RunPython(hold_the_rollup_lock, migrations.RunPython.noop),
        migrations.AddField(
            model_name="userdayrollup",
            name="views",
            field=models.BigIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="userdayrollup",
            name="purchases",
            field=models.BigIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.CreateModel(
            name="UserDayActivity",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("day", models.DateField()),
                ("events", models.BigIntegerField()),
                ("identity_link", models.ForeignObject(
                    from_fields=["user"], null=True,
                    on_delete=django.db.models.deletion.DO_NOTHING, related_name="+",
                    to="ingestion.identitylink", to_fields=["alias"])),
                ("user", models.ForeignKey(db_index=False,
                                           on_delete=django.db.models.deletion.CASCADE,
                                           related_name="+", to="ingestion.enduser")),
            ],
            options={
                "verbose_name_plural": "user day activity",
                "constraints": [models.UniqueConstraint(fields=("day", "user"),
                                                        name="user_day_activity_key")],
            },
        ),
        migrations.RunPython(start_the_rollups_over(*ROLLUP_MODELS), migrations.RunPython.noop),
    ]
