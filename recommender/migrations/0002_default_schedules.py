from django.db import migrations


def install_default_schedules(apps, schema_editor):
    from recommender.schedules import ensure_default_schedules

    ensure_default_schedules(apps=apps)


class Migration(migrations.Migration):
    """Docker deployments run `migrate` only; this gives them the nightly retrains and the
    job recovery schedule. Reversing leaves them: an admin may have edited them since."""

    dependencies = [
        ("recommender", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(install_default_schedules, migrations.RunPython.noop),
    ]
