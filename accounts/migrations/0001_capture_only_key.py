import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    """Client-app keys that may only send events (the key in a shop's web pages). Keys made
    before it stay server keys, as they were."""

    initial = True

    dependencies = [
        ("rest_framework_api_key", "0005_auto_20220110_1102"),
    ]

    operations = [
        migrations.CreateModel(
            name="CaptureOnlyKey",
            fields=[
                ("api_key", models.OneToOneField(
                    on_delete=django.db.models.deletion.CASCADE, primary_key=True,
                    related_name="capture_only", serialize=False,
                    to="rest_framework_api_key.apikey")),
            ],
            options={"verbose_name": "capture-only API key"},
        ),
    ]
