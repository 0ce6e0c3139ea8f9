"""Hand-built events for the insight tests: users, items and events at chosen times."""

import uuid
from datetime import UTC, date, datetime

from analytics.insights.common import DateRange
from ingestion.models import EndUser, Event, Item
from recommender.models import Impression, ModelVersion


JANUARY = DateRange(start=date(2026, 1, 1), end=date(2026, 1, 31))


def at(day: int, hour: int = 12, minute: int = 0, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def user(name: str, first_seen: datetime | None = None) -> EndUser:
    return EndUser.objects.create(user_id=name, first_seen=first_seen)


def item(name: str, category: str = "toys") -> Item:
    return Item.objects.create(item_id=name, title=name.title(), category=category)


def event(who: EndUser, kind: str, when: datetime, thing: Item | None = None,
          **fields) -> Event:
    return Event.objects.create(user=who, type=kind, timestamp=when, received_at=when,
                                item=thing, **fields)


def impressions(version: ModelVersion | None, strategy: str, count: int) -> list[Impression]:
    return Impression.objects.bulk_create(
        Impression(rec_id=uuid.uuid4(), user_id="someone", item_ids=["book"],
                   model_version=version, strategy=strategy, created_at=at(10))
        for _ in range(count))
