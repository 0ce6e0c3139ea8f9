from django.db import migrations, models

from analytics.migrations._rollup_restart import hold_the_rollup_lock


def count_the_keys_again(apps, schema_editor):
    """The rows counted so far have no category: they go, and with no key left counted
    the next update counts every key of ANALYTICS_ROLLUP_PROPERTIES over the rolled-up
    events again (analytics.services._sync_property_keys), by category. Until then
    property breakdowns and filters read raw events, exactly."""
    alias = schema_editor.connection.alias
    apps.get_model("analytics", "DailyPropertyRollup").objects.using(alias).all().delete()
    apps.get_model("analytics", "RollupState").objects.using(alias).update(property_keys=[])


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0011_property_rollup"),
    ]

    operations = [
        migrations.RunPython(hold_the_rollup_lock, migrations.RunPython.noop),
        migrations.RunPython(count_the_keys_again, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="dailypropertyrollup",
            name="daily_property_rollup_key",
        ),
        migrations.AddField(
            model_name="dailypropertyrollup",
            name="category",
            field=models.CharField(default="", max_length=255),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="dailypropertyrollup",
            name="every_category",
            field=models.BooleanField(default=False,
                                      help_text="The row sums the events of every category"),
        ),
        migrations.AddConstraint(
            model_name="dailypropertyrollup",
            constraint=models.UniqueConstraint(
                fields=("day", "event_type", "key", "every_category", "category", "value_hash"),
                name="daily_property_rollup_key"),
        ),
    ]
