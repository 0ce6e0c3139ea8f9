from django.db import migrations, models

INDEX = models.Index(fields=["received_at"], name="event_received")


def add_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        # CONCURRENTLY: a plain CREATE INDEX would block ingestion for the whole build
        # (minutes on tens of millions of events). A build interrupted earlier leaves an
        # invalid index that IF NOT EXISTS would keep: drop it first.
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SELECT NOT indisvalid FROM pg_index "
                           "WHERE indexrelid = to_regclass('event_received')")
            invalid = cursor.fetchone()
        if invalid and invalid[0]:
            schema_editor.execute("DROP INDEX CONCURRENTLY event_received")
        schema_editor.execute("CREATE INDEX CONCURRENTLY IF NOT EXISTS event_received "
                              "ON ingestion_event (received_at)")
    else:
        schema_editor.add_index(apps.get_model("ingestion", "Event"), INDEX)


def remove_index(apps, schema_editor):
    schema_editor.execute("DROP INDEX IF EXISTS event_received")


class Migration(migrations.Migration):
    """The index the analytics rollups read new events by."""

    atomic = False

    dependencies = [
        ("ingestion", "0004_event_unscored_text_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="event", index=INDEX)],
            database_operations=[migrations.RunPython(add_index, remove_index)],
        ),
    ]
