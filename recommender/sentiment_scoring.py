"""Scoring review text with whatever serves sentiment: the active trained model, an A/B
candidate, or VADER while no trained model has beaten it."""

import functools
import logging
from collections.abc import Callable, Sequence
from datetime import datetime

from django.db import InterfaceError, OperationalError, transaction

from ingestion.models import HAS_SENTIMENT_TEXT, Event
from recommender.models import ModelKind
from recommender.selectors import scored_text
from recommender.serving import serving_version

logger = logging.getLogger(__name__)

VADER_NAME = "vader"
SCORE_BATCH = 512


@functools.cache
def _vader():
    from recommender.ml.lexicon import VaderBaseline

    return VaderBaseline()


def current_scorer(*, user_id: str | None = None):
    """(scorer, version name) that serves sentiment now."""
    loaded = serving_version(kind=ModelKind.SENTIMENT, user_id=user_id)
    if loaded is None:
        return _vader(), VADER_NAME
    return loaded.model, loaded.name


def score_texts(*, texts: Sequence[str]) -> tuple[list[tuple[str, float]], str]:
    scorer, name = current_scorer()
    return scorer.predict(list(texts)), name


def score_events(*, event_pks: Sequence[int]) -> int:
    """Stores label, probability positive and version on those of the given events with
    text (or a review headline) that have none yet; returns how many it scored. Two runs
    over the same events (a task delivered twice, the sweep beside the task queued for
    them) store one score. The model runs outside the transaction: on SQLite a transaction
    holds the database's only write lock, and scoring a batch takes seconds."""
    unscored = Event.objects.filter(HAS_SENTIMENT_TEXT, pk__in=event_pks, sentiment_model="")
    events = list(unscored.only("id", "text", "properties"))
    if not events:
        return 0
    scorer, name = current_scorer()
    for start in range(0, len(events), SCORE_BATCH):
        batch = events[start:start + SCORE_BATCH]
        texts = [scored_text(e.text, e.properties) for e in batch]
        # An event with nothing to read (a blank text, a headline property that holds no
        # text) is marked as seen by this scorer, with no label or score: the sweep moves
        # on from it and no dashboard counts it as a review.
        for event in batch:
            event.sentiment_label, event.sentiment_score, event.sentiment_model = "", None, name
        readable = [index for index, text in enumerate(texts) if text.strip()]
        if readable:
            predictions = scorer.predict([texts[index] for index in readable])
            for index, (label, score) in zip(readable, predictions):
                batch[index].sentiment_label, batch[index].sentiment_score = label, score
    with transaction.atomic():
        # Locked in key order: the sweep and a task locking the same rows take turns
        # instead of deadlocking.
        still_unscored = set(unscored.select_for_update().order_by("pk")
                             .values_list("pk", flat=True))
        events = [event for event in events if event.pk in still_unscored]
        Event.objects.bulk_update(events, ["sentiment_label", "sentiment_score",
                                           "sentiment_model"], batch_size=SCORE_BATCH)
    return len(events)


def backfill_missing_scores(*, batch_size: int = 2000,
                            on_batch: Callable[[int], None] | None = None,
                            received_before: datetime | None = None) -> int:
    """Scores every event with text and no score yet (received before `received_before`,
    if given), in primary-key order; re-running finds nothing left to do."""
    missing = Event.objects.filter(HAS_SENTIMENT_TEXT, sentiment_model="")
    if received_before is not None:
        missing = missing.filter(received_at__lt=received_before)
    scored = 0
    last_pk = 0
    while True:
        pks = list(missing.filter(pk__gt=last_pk).order_by("pk")
                   .values_list("pk", flat=True)[:batch_size])
        if not pks:
            return scored
        try:
            done = score_events(event_pks=pks)
        except (OperationalError, InterfaceError):
            raise  # transient: the task retries the whole sweep
        except Exception:
            # One batch the scorer cannot take must not keep every later review unscored
            # (each sweep starts again from the lowest key): it is logged, and tried again
            # by the next sweep.
            logger.exception("Sentiment scoring of events %s-%s failed", pks[0], pks[-1])
            done = 0
        scored += done
        last_pk = pks[-1]
        if on_batch is not None:
            on_batch(done)


def count_missing_scores() -> int:
    return Event.objects.filter(HAS_SENTIMENT_TEXT, sentiment_model="").count()
