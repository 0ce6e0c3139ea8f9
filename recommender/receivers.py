"""Reacts to ingestion: new events with text (or a review headline) are scored on the
default queue."""

import logging

from django.dispatch import receiver

from ingestion.signals import events_with_text_stored

logger = logging.getLogger(__name__)


@receiver(events_with_text_stored)
def enqueue_sentiment_scoring(sender, event_pks: list[int], **kwargs) -> None:
    # Sent after commit, so the worker always finds the rows. The events are stored
    # whatever happens here: a broker that is down (or a failing eager run) must not turn
    # the ingestion response into a 500 that makes clients retry committed events, nor
    # hold it up retrying the broker (retry=False); the periodic sweep
    # (score_missed_sentiment) scores whatever was missed.
    from recommender.tasks import score_event_sentiment

    try:
        score_event_sentiment.apply_async((event_pks,), retry=False)
    except Exception:
        logger.warning("Could not enqueue sentiment scoring of %d events; the periodic "
                       "sweep will score them", len(event_pks), exc_info=True)
