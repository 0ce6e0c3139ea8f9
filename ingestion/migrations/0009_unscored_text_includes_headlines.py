from django.db import migrations, models, transaction

NAME = "event_unscored_text"
TEXT_ONLY = models.Index(fields=["id"], name=NAME,
                         condition=models.Q(sentiment_model="") & ~models.Q(text=""))
TEXT_OR_HEADLINE = models.Index(
    fields=["id"], name=NAME,
    condition=models.Q(sentiment_model="") & (
        ~models.Q(text="") | models.Q(type__in=("review", "rating"),
                                      properties__has_key="review_title")))


def _swap(apps, schema_editor, *, old: models.Index, new: models.Index) -> None:
    """On PostgreSQL the new index is built beside the old one, CONCURRENTLY (a plain
    CREATE INDEX would block ingestion while it reads the whole table), then they are
    swapped; a build interrupted earlier leaves an invalid event_unscored_text_new, which
    is dropped first."""
    event = apps.get_model("ingestion", "Event")
    if schema_editor.connection.vendor != "postgresql":
        # In one transaction (DDL is transactional in SQLite): dropped without the new one
        # built, a rerun would fail to drop it again.
        with transaction.atomic(using=schema_editor.connection.alias):
            schema_editor.remove_index(event, old)
            schema_editor.add_index(event, new)
        return
    building = models.Index(fields=new.fields, name=f"{NAME}_new", condition=new.condition)
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}_new")
    schema_editor.execute(building.create_sql(event, schema_editor, concurrently=True))
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {NAME}")
    schema_editor.execute(f"ALTER INDEX {NAME}_new RENAME TO {NAME}")


def include_headlines(apps, schema_editor):
    _swap(apps, schema_editor, old=TEXT_ONLY, new=TEXT_OR_HEADLINE)


def text_only(apps, schema_editor):
    _swap(apps, schema_editor, old=TEXT_OR_HEADLINE, new=TEXT_ONLY)


class Migration(migrations.Migration):
    """The sweep's index of unscored events also holds reviews and ratings sent with a
    headline and no body, which sentiment now scores."""

    atomic = False

    dependencies = [
        ("ingestion", "0008_covering_item_time_index"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.RemoveIndex(model_name="event", name=NAME),
                              migrations.AddIndex(model_name="event", index=TEXT_OR_HEADLINE)],
            database_operations=[migrations.RunPython(include_headlines, text_only)],
        ),
    ]
