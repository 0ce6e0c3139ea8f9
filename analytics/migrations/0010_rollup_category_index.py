"""An index for reading one category's per-user rollups. Built in place: PostgreSQL holds
rollup updates (not dashboards) while it builds, about 15 s for 3M user-day rows
(benchmarks/README.md, session 25)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0009_event_day_statistics"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="userdayrollup",
            index=models.Index(fields=["category", "day"], include=("user",),
                               name="user_day_rollup_category"),
        ),
    ]
