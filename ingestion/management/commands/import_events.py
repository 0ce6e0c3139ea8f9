from ingestion.importers import ImportCommand, event_file_rows


class Command(ImportCommand):
    help = ("Import events in the API's event schema from a JSON Lines file (one event object "
            "a line) or a .csv file (header of event fields; properties as a JSON object). "
            "Rows without an event_id get one derived from the row, so re-running stores "
            "nothing new. Bad rows are reported by line number and skipped.")
    file_help = "A .jsonl/.ndjson file, or a .csv file."
    read_rows = staticmethod(event_file_rows)
