from django.db import migrations


def install_rollup_schedule(apps, schema_editor):
    from recommender.schedules import ANALYTICS_ROLLUP, ensure_default_schedules

    ensure_default_schedules(apps=apps, only={ANALYTICS_ROLLUP})


class Migration(migrations.Migration):
    """Installs the every-minute rollup update, and nothing else: a default schedule an
    admin deleted stays deleted."""

    dependencies = [
        ("analytics", "0001_initial"),
        ("recommender", "0004_sentiment_sweep_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(install_rollup_schedule, migrations.RunPython.noop),
    ]
