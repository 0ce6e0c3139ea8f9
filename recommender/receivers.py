"""Reacts to ingestion: new events with text are scored on the default queue."""

from django.dispatch import receiver

from ingestion.signals import events_with_text_stored


@receiver(events_with_text_stored)
def enqueue_sentiment_scoring(sender, event_pks: list[int], **kwargs) -> None:
    # Sent after commit, so the worker always finds the rows.
    from recommender.tasks import score_event_sentiment

    score_event_sentiment.delay(event_pks)
