"""A user's timeline, for a product manager looking into a complaint: the person's events
in time order (their own and their linked anonymous ids'), traits, review sentiment, and
what recommendations they would get now and from which recent items. Read-only: the
recommendations shown are not logged as impressions."""

from typing import Any

from django.db.models import Count

from analytics.insights.common import SENTIMENT_LABELS
from ingestion.models import EndUser, Event
from ingestion.selectors import person_of
from recommender.recommendations import recommend_for_user
from recommender.selectors import recent_interactions


DEFAULT_EVENT_LIMIT = 200
# The recent items shown as what drove the recommendations (the model reads the latest
# of them, up to its history length).
HISTORY_ITEMS = 20


def user_timeline(*, user_id: str, limit: int = DEFAULT_EVENT_LIMIT) -> dict[str, Any] | None:
    """None for a user id never seen. Events newest first, at most ``limit``."""
    person = person_of(user_id=user_id)
    if person is None:
        return None
    users = list(EndUser.objects.filter(pk__in=person.user_pks).order_by("first_seen", "user_id"))
    person_events = Event.objects.filter(user_id__in=person.user_pks)
    events = list(person_events.order_by("-timestamp", "-id").values(
        "event_id", "type", "timestamp", "user__user_id", "item__item_id", "item__title", "value",
        "text", "sentiment_label", "sentiment_score", "properties", "rec_id")[:limit])
    sentiment_counts = dict(person_events.exclude(sentiment_label="")
                            .values("sentiment_label").annotate(reviews=Count("id"))
                            .values_list("sentiment_label", "reviews"))
    recommendation = recommend_for_user(user_id=person.user_id, log_impression=False)
    history = recent_interactions(person=person, limit=HISTORY_ITEMS)
    return {
        "user_id": person.user_id,
        "looked_up": user_id,
        "ids": [{"user_id": user.user_id, "first_seen": user.first_seen, "last_seen": user.last_seen,
                 "traits": sorted(user.traits.items()) if isinstance(user.traits, dict) else []}
                for user in users],
        "first_seen": min((user.first_seen for user in users if user.first_seen), default=None),
        "last_seen": max((user.last_seen for user in users if user.last_seen), default=None),
        "event_count": person_events.count(),
        "events_by_type": dict(person_events.values("type").annotate(events=Count("id"))
                               .order_by("-events", "type").values_list("type", "events")),
        "events": [{**{key.removeprefix("user__").removeprefix("item__"): value
                       for key, value in row.items() if key not in ("item__item_id", "item__title")},
                    "item_id": row["item__item_id"], "item_title": row["item__title"]}
                   for row in events],
        "sentiment": {label: sentiment_counts.get(label, 0) for label in SENTIMENT_LABELS},
        "recommendations": {"strategy": recommendation.strategy,
                            "model_version": recommendation.model_version,
                            "items": recommendation.items},
        "recent_items": list(reversed(history)),
    }
