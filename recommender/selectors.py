"""Reads for training and serving: interactions as arrays, user histories, popular items."""

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from django.conf import settings
from django.db import connection
from django.db.models import Case, FloatField, Sum, Value, When
from django.utils import timezone

from config.db import fetch_prepared
from ingestion.models import (
    HAS_SENTIMENT_TEXT,
    TEXT_EVENT_TYPES,
    EndUser,
    Event,
    Item,
    review_headline,
)
from ingestion.selectors import Person, person_user_id
from recommender.ml.lexicon import review_text
from recommender.models import ModelVersion

CHUNK_ROWS = 50_000


def _chunks(queryset, fields: tuple[str, ...]) -> Iterator[list[tuple]]:
    rows: list[tuple] = []
    for row in queryset.values_list(*fields).iterator(chunk_size=CHUNK_ROWS):
        rows.append(row)
        if len(rows) == CHUNK_ROWS:
            yield rows
            rows = []
    if rows:
        yield rows


def interaction_frame(*, weights: dict[str, float] | None = None) -> pd.DataFrame:
    """Every item interaction as user_id (the person's, for a linked alias), item_id,
    timestamp and received_at (epoch seconds), weight, in time order (ties by arrival),
    built chunk by chunk into columnar arrays."""
    weights = weights or settings.RECOMMENDER_EVENT_WEIGHTS
    queryset = (Event.objects.filter(type__in=list(weights), item__isnull=False)
                .order_by("timestamp", "id"))
    frames = []
    # A linked anonymous id's events are its person's: one history, one user to train.
    queryset = queryset.annotate(person=person_user_id())
    for rows in _chunks(queryset, ("person", "item__item_id", "timestamp", "type",
                                   "received_at")):
        users, items, stamps, types, received = zip(*rows)
        frames.append(pd.DataFrame({
            "user_id": pd.Categorical(users),
            "item_id": pd.Categorical(items),
            "timestamp": np.fromiter((t.timestamp() for t in stamps), dtype=np.float64,
                                     count=len(stamps)),
            "weight": pd.Series(types).map(weights).to_numpy(dtype=np.float32),
            "received_at": np.fromiter((t.timestamp() for t in received), dtype=np.float64,
                                       count=len(received)),
        }))
    if not frames:
        return pd.DataFrame({"user_id": pd.Series(dtype=object), "item_id": pd.Series(dtype=object),
                             "timestamp": pd.Series(dtype=np.float64),
                             "weight": pd.Series(dtype=np.float32),
                             "received_at": pd.Series(dtype=np.float64)})
    frame = pd.concat(frames, ignore_index=True)
    frame["user_id"] = frame["user_id"].astype(str)
    frame["item_id"] = frame["item_id"].astype(str)
    return frame


def item_feature_frame() -> pd.DataFrame:
    rows = list(Item.objects.values_list("item_id", "category", "title"))
    return pd.DataFrame(rows, columns=["item_id", "category", "title"])


def user_trait_map() -> dict[str, dict[str, str]]:
    """Users' traits, values as text (as ingestion.selectors.person_of reads them for
    serving); traits edited in the admin into something other than an object are none."""
    return {user_id: {str(k): str(v) for k, v in traits.items()}
            for user_id, traits in EndUser.objects.exclude(traits={}).values_list(
                "user_id", "traits") if isinstance(traits, dict)}


def scored_text(text: str, properties: object) -> str:
    """An event's text as sentiment reads it: a review's headline property, then the text."""
    return review_text(text, review_headline(properties))


def labelled_review_frame() -> pd.DataFrame:
    """Review and rating texts (headline first, as `scored_text`; a headline alone is a
    text) with their label source: an explicit `label` property when the import carried
    one, else the rating (a half star label of its side, but 2.5 and 3.5, left out), the
    event's primary key (`event_pk`), which never changes, and its time (`timestamp`,
    epoch seconds)."""
    rows = (Event.objects.filter(HAS_SENTIMENT_TEXT, type__in=TEXT_EVENT_TYPES)
            .order_by("id").values_list("id", "timestamp", "text", "value", "properties"))
    pks, stamps, texts, labels = [], [], [], []
    for pk, stamp, text, value, properties in rows.iterator(chunk_size=CHUNK_ROWS):
        read = scored_text(text, properties)
        if not read.strip():  # a blank body, or a headline property that holds no text
            continue
        label = properties.get("label") if isinstance(properties, dict) else None
        if label in ("positive", "negative", "neutral"):
            labels.append(label)
        elif value is not None and float(value).is_integer():
            labels.append(int(value))
        elif value is not None and not 2 < value < 4:
            # Half a star beyond the middle (1.5, 4.5) is as clear as its whole neighbours;
            # 2.5 and 3.5 lean neither way enough to learn from.
            labels.append("positive" if value >= 4 else "negative")
        else:
            continue
        texts.append(read)
        pks.append(pk)
        stamps.append(stamp.timestamp())
    return pd.DataFrame({"event_pk": pd.Series(pks, dtype=np.int64),
                         "timestamp": pd.Series(stamps, dtype=np.float64),
                         "text": pd.Series(texts, dtype=object),
                         "label": pd.Series(labels, dtype=object)})


def recent_interactions(*, person: Person | None, limit: int,
                        item_ids_by_pk: Mapping[int, str] | None = None) -> list[str]:
    """The person's latest item interactions (their own and their linked anonymous ids'),
    oldest to newest (duplicates kept). Item ids come from ``item_ids_by_pk`` (a web
    process's catalog) where it has them: joining the items table cost an index lookup
    per history row, most of the query for a long history; the database answers for the
    rest."""
    if person is None:
        return []
    # Runs on every recommendation request: plain SQL (the same query the ORM would build
    # from Event.objects.filter(user__in=..., item__isnull=False, type__in=...)
    # .order_by("-timestamp", "-id")) spares the query compilation, the largest CPU cost
    # of the request, and is prepared once per connection (and per number of linked ids).
    types = list(settings.RECOMMENDER_EVENT_WEIGHTS)
    quote = connection.ops.quote_name
    event = Event._meta.db_table
    users = ", ".join(["%s"] * len(person.user_pks))
    sql = (f"SELECT e.{quote('item_id')} FROM {quote(event)} e "
           f"WHERE e.{quote('user_id')} IN ({users}) AND e.{quote('item_id')} IS NOT NULL AND "
           f"e.{quote('type')} IN ({', '.join(['%s'] * len(types))}) "
           f"ORDER BY e.{quote('timestamp')} DESC, e.{quote('id')} DESC LIMIT %s")
    pks = [row[0] for row in fetch_prepared(sql, [*person.user_pks, *types, limit])]
    pks.reverse()
    known = item_ids_by_pk or {}
    missing = {pk for pk in pks if pk not in known}
    found = (dict(Item.objects.filter(pk__in=missing).values_list("pk", "item_id"))
             if missing else {})
    return [known[pk] if pk in known else found[pk] for pk in pks if pk in known or pk in found]


def interacted_items(*, person: Person) -> set[str]:
    """Every item the person (their own and their linked anonymous ids) interacted with,
    however long ago: what a recommendation leaves out where their recent history does
    not hold all of it."""
    return set(Item.objects.filter(
        pk__in=Event.objects.filter(user__in=person.user_pks, item__isnull=False,
                                    type__in=list(settings.RECOMMENDER_EVENT_WEIGHTS))
        .values("item_id")).values_list("item_id", flat=True))


def popular_items(*, days: int = 30, limit: int = 500, category: str | None = None,
                  now: datetime | None = None) -> list[tuple[str, str, float]]:
    """(item_id, category, score) of up to `limit` active items (of the category) by
    type-weighted interactions in the last `days`, topped up with the most interacted
    ever, then the newest items: a quiet shop's, or a small category's, list is as long as
    its catalog allows."""
    now = now or timezone.now()
    weights = settings.RECOMMENDER_EVENT_WEIGHTS
    weighted = Sum(Case(*(When(type=name, then=Value(weight)) for name, weight in weights.items()),
                        default=Value(0.0), output_field=FloatField()))
    items = Item.objects.filter(is_active=True)
    if category is not None:
        items = items.filter(category=category)
    ranked: dict[str, tuple[str, str, float]] = {}
    for since in (now - timedelta(days=days), None):
        queryset = Event.objects.filter(item__in=items, type__in=list(weights))
        if since is not None:
            queryset = queryset.filter(timestamp__gte=since)
        for row in (queryset.values("item__item_id", "item__category").annotate(score=weighted)
                    .order_by("-score", "item__item_id")
                    .values_list("item__item_id", "item__category", "score")[:limit]):
            ranked.setdefault(row[0], row)
        if len(ranked) >= limit:
            return list(ranked.values())[:limit]
    for item, item_category in (items.exclude(item_id__in=list(ranked)).order_by("-created_at")
                                .values_list("item_id", "category")[:limit - len(ranked)]):
        ranked[item] = (item, item_category, 0.0)
    return list(ranked.values())


def active_version(*, kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()
