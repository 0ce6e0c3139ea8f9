from django.db import migrations, models

SCORED = models.Index(fields=["timestamp"], name="event_scored_time",
                      include=["sentiment_label", "item", "id"], condition=~models.Q(sentiment_label=""))
ATTRIBUTED = models.Index(fields=["rec_id"], name="event_rec", include=["type", "value", "item"],
                          condition=models.Q(rec_id__isnull=False))
# (name, key column, covered columns, condition) as PostgreSQL builds them.
COVERING = [
    ("event_scored_time", "timestamp", "sentiment_label, item_id, id", "NOT sentiment_label = ''"),
    ("event_rec", "rec_id", "type, value, item_id", "rec_id IS NOT NULL"),
]


def _rebuild(schema_editor, *, covering: bool) -> None:
    """Builds each new index beside the old one, CONCURRENTLY (a plain CREATE INDEX would
    block ingestion for the whole build), then swaps them. A build interrupted earlier
    leaves an invalid *_new index: it is dropped first."""
    if schema_editor.connection.vendor != "postgresql":
        return  # SQLite has no covering indexes: its indexes stay on their key columns.
    for name, key, covered, condition in COVERING:
        include = f"INCLUDE ({covered})" if covering else ""
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}_new")
        schema_editor.execute(f"CREATE INDEX CONCURRENTLY {name}_new ON ingestion_event ({key}) "
                              f"{include} WHERE {condition}")
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        schema_editor.execute(f"ALTER INDEX {name}_new RENAME TO {name}")


def cover(apps, schema_editor):
    _rebuild(schema_editor, covering=True)


def uncover(apps, schema_editor):
    _rebuild(schema_editor, covering=False)


class Migration(migrations.Migration):
    """The sentiment and recommendation dashboards' indexes also hold the columns those
    dashboards read, so PostgreSQL answers them from the indexes alone."""

    atomic = False

    dependencies = [
        ("ingestion", "0005_event_event_received"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveIndex(model_name="event", name="event_scored_time"),
                              migrations.AddIndex(model_name="event", index=SCORED),
                              migrations.RemoveIndex(model_name="event", name="event_rec"),
                              migrations.AddIndex(model_name="event", index=ATTRIBUTED)],
            database_operations=[migrations.RunPython(cover, uncover)],
        ),
    ]
