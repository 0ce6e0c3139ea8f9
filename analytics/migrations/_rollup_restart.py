"""RunPython steps for migrations that change the rollups' shape (a name starting with "_"
keeps Django's loader from taking this module for a migration). Each migration names the
rollup models as they stand at that migration, so a model added later is not looked up in
an older migration's state."""

from collections.abc import Callable


def hold_the_rollup_lock(apps, schema_editor):
    """Every rollup update locks the state row before it writes the rollups; taking it
    before altering them lets an update under way finish first and makes the next one
    wait, instead of each holding what the other needs."""
    state = apps.get_model("analytics", "RollupState")
    list(state.objects.using(schema_editor.connection.alias).select_for_update().filter(pk=1))


def start_the_rollups_over(*model_names: str) -> Callable:
    """A RunPython step: the new tables and columns are empty for the events rolled up so
    far, so the rollups start over: readers answer from raw events (exact, slower) until
    the schedule's updates have gone over the log again (about 90 s per 10M events)."""

    def empty_the_rollups(apps, schema_editor):
        connection = schema_editor.connection
        models = [apps.get_model("analytics", name) for name in model_names]
        if connection.vendor == "postgresql":
            # Instant where a DELETE would take minutes and leave the tables bloated.
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE " + ", ".join(
                    connection.ops.quote_name(model._meta.db_table) for model in models))
        else:
            for model in models:
                model.objects.using(connection.alias).all().delete()
        apps.get_model("analytics", "RollupState").objects.using(connection.alias).update(
            watermark="1970-01-01T00:00:00Z")

    return empty_the_rollups
