from django.db import migrations


def install_default_schedules(apps, schema_editor):
    from recommender.schedules import ensure_default_schedules

    ensure_default_schedules(apps=apps)


class Migration(migrations.Migration):
    """Adds the sentiment sweep to deployments that migrated before it existed; schedules
    already there (and an admin's edits to them) are left as they are."""

    dependencies = [
        ("recommender", "0003_impression_version_fk_without_own_index"),
    ]

    operations = [
        migrations.RunPython(install_default_schedules, migrations.RunPython.noop),
    ]
