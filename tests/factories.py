import uuid
from datetime import UTC, datetime

import factory
from django.contrib.auth import get_user_model

from ingestion.models import EndUser, Event, Item


class ItemFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Item
        django_get_or_create = ("item_id",)

    item_id = factory.Sequence(lambda n: f"item-{n}")
    title = factory.Sequence(lambda n: f"Item {n}")
    category = "general"


class EndUserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = EndUser
        django_get_or_create = ("user_id",)

    user_id = factory.Sequence(lambda n: f"user-{n}")


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    event_id = factory.LazyFunction(uuid.uuid4)
    type = "view"
    user = factory.SubFactory(EndUserFactory)
    item = factory.SubFactory(ItemFactory)
    timestamp = factory.LazyFunction(lambda: datetime(2026, 1, 1, 12, tzinfo=UTC))
    received_at = factory.SelfAttribute("timestamp")


class LoginFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"login-{n}")
    password = factory.PostGenerationMethodCall("set_password", "pw")
