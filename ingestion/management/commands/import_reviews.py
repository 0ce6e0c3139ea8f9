from typing import Any

from django.core.management.base import CommandParser

from ingestion.importers import ImportCommand, review_rows
from ingestion.models import REVIEW_TITLE_PROPERTY


class Command(ImportCommand):
    help = ("Import product reviews from a CSV with columns item_id, rating, text and optionally "
            "user_id, review_id, review_title (the review's headline, which sentiment reads "
            "first), title, category, timestamp (ISO 8601 with offset, or unix time), label. "
            "title and category update the item. Without user_id the author is "
            "review-author-<review_id>; without timestamp a review is dated at the file's "
            "modification time. Re-running stores nothing new. Bad rows are reported by line "
            "number and skipped.")
    file_help = "Reviews CSV file."
    read_rows = staticmethod(review_rows)

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--headline-column", default=REVIEW_TITLE_PROPERTY,
                            help="The column holding each review's headline (default "
                                 f"{REVIEW_TITLE_PROPERTY}); e.g. title for exports that "
                                 "call it that, which then no longer names the item.")

    def reader_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return {"headline_column": options["headline_column"]}
