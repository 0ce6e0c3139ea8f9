from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("analytics", "0004_rollup_type_bits"),
    ]

    operations = [
        migrations.AddField(
            model_name="rollupstate",
            name="checked_at",
            field=models.DateTimeField(
                blank=True, help_text="When the recent days were last compared with their events",
                null=True),
        ),
    ]
