"""Event.value's help text: ratings go down to half a star (MovieLens's ratings.csv has
0.5). No change to the table."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("ingestion", "0009_unscored_text_includes_headlines"),
    ]

    operations = [
        migrations.AlterField(
            model_name="event",
            name="value",
            field=models.FloatField(
                blank=True, null=True,
                help_text="Rating 0.5-5 for ratings and reviews, amount for purchases"),
        ),
    ]
