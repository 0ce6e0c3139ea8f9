from ingestion.importers import ImportCommand, review_rows


class Command(ImportCommand):
    help = ("Import product reviews from a CSV with columns item_id, rating, text and optionally "
            "user_id, review_id, title, category, timestamp (ISO 8601 with offset, or unix "
            "time). title and category update the item. Without user_id the author is "
            "review-author-<review_id>; without timestamp a review is dated at the file's "
            "modification time. Re-running stores nothing new. Bad rows are reported by line "
            "number and skipped.")
    file_help = "Reviews CSV file."
    read_rows = staticmethod(review_rows)
