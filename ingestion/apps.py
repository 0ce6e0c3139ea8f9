from django.apps import AppConfig


class IngestionConfig(AppConfig):
    name = "ingestion"
    verbose_name = "Events, items and users"

    def ready(self):
        from ingestion.capture import schema  # noqa: F401  (registers the SDK key schemes)
