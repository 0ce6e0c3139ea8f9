"""The rollups' per-user rows go with their user, though the database does not check them,
and hold a first occurrence for every standard event type."""

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from analytics.models import TYPE_BITS, UserDayActivity, UserDayRollup, first_at_field
from analytics.services import roll_up_new_events
from ingestion.models import EndUser
from ingestion.services import EventInput, store_events

NOW = timezone.now()


@pytest.mark.django_db
def test_deleting_a_user_deletes_their_rolled_up_days_at_once():
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id=user,
                                    item_id="sku-1", timestamp=NOW - timedelta(days=2))
                         for user in ("ann", "ann", "bob")],
                 received_at=NOW - timedelta(minutes=30))
    roll_up_new_events(now=NOW)

    EndUser.objects.get(user_id="ann").delete()

    # By key, not through a join to the users, which would hide rows left behind.
    bob = EndUser.objects.get(user_id="bob").pk
    assert list(UserDayRollup.objects.values_list("user_id", flat=True)) == [bob]
    assert list(UserDayActivity.objects.values_list("user_id", flat=True)) == [bob]


@pytest.mark.parametrize("model", [UserDayRollup, UserDayActivity])
def test_every_standard_event_type_has_its_first_occurrence_column(model):
    """A type added to TYPE_BITS without one would fail each rollup update."""
    columns = {field.name for field in model._meta.get_fields()}
    assert {first_at_field(event_type) for event_type in TYPE_BITS} <= columns
