import django.db.models.deletion
from django.db import migrations, models


# Rolled up from the same events as UserDayRollup (one watermark covers both), so summing
# its categories gives exactly what rolling up the events again would.
FILL_FROM_USER_DAY_ROLLUP = """
INSERT INTO analytics_userdayactivity (day, user_id, events)
SELECT day, user_id, SUM(events) FROM analytics_userdayrollup GROUP BY day, user_id
"""


class Migration(migrations.Migration):

    dependencies = [
        ('analytics', '0002_rollup_schedule'),
        ('ingestion', '0006_covering_analytics_indexes'),
    ]

    operations = [
        migrations.CreateModel(
            name='UserDayActivity',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('day', models.DateField()),
                ('events', models.BigIntegerField()),
                ('identity_link', models.ForeignObject(from_fields=['user'], null=True, on_delete=django.db.models.deletion.DO_NOTHING, related_name='+', to='ingestion.identitylink', to_fields=['alias'])),
                ('user', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='+', to='ingestion.enduser')),
            ],
            options={
                'verbose_name_plural': 'user day activity',
                'constraints': [models.UniqueConstraint(fields=('day', 'user'), name='user_day_activity_key')],
            },
        ),
        migrations.RunSQL(FILL_FROM_USER_DAY_ROLLUP, migrations.RunSQL.noop),
    ]
