from django.db import migrations, models


class Migration(migrations.Migration):
    """When a training job's task was last sent, so recovery can tell a task lost after it
    reached the broker from one still waiting there."""

    dependencies = [
        ("recommender", "0004_sentiment_sweep_schedule"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingjob",
            name="enqueued_at",
            field=models.DateTimeField(blank=True, null=True,
                                       help_text="When its task was last sent to the broker"),
        ),
    ]
