from django.apps import AppConfig


class RecommenderConfig(AppConfig):
    name = "recommender"
    verbose_name = "Models and recommendations"

    def ready(self) -> None:
        from recommender import receivers  # noqa: F401  (connects ingestion's signals)
