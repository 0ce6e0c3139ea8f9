from ingestion.importers import ImportCommand, movielens_rows


class Command(ImportCommand):
    help = ("Import MovieLens ratings as rating events with their original time: u.data "
            "(user, item, rating, unix time; tab-separated), a RecBole .inter file or "
            "ratings.csv; the format is detected. Re-running stores nothing new. Bad rows are "
            "reported by line number and skipped.")
    file_help = "u.data, <dataset>.inter or ratings.csv."
    read_rows = staticmethod(movielens_rows)
