from django.db import migrations


def install_sentiment_sweep(apps, schema_editor):
    from recommender.schedules import SENTIMENT_SWEEP, ensure_default_schedules

    ensure_default_schedules(apps=apps, only={SENTIMENT_SWEEP})


class Migration(migrations.Migration):
    """Adds the sentiment sweep to deployments that migrated before it existed, and nothing
    else: a default schedule an admin deleted stays deleted."""

    dependencies = [
        ("recommender", "0003_impression_version_fk_without_own_index"),
    ]

    operations = [
        migrations.RunPython(install_sentiment_sweep, migrations.RunPython.noop),
    ]
