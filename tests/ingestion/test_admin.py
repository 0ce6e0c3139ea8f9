"""The admin's deletions of events, users and items, and its edits of events, reach the
dashboards' rollups."""

import uuid
from datetime import timedelta

import pytest
from django.contrib.admin import site
from django.urls import reverse
from django.utils import timezone

from analytics.models import DailyEventRollup, UserDayRollup
from analytics.services import roll_up_new_events
from ingestion.models import EndUser, Event, Item
from ingestion.services import EventInput, store_events

NOW = timezone.now()


@pytest.fixture
def rolled_up_shop(db):
    """ann viewed sku-1 twice three days ago, bob sku-2 once five days ago; all rolled up."""
    store_events(events=[
        EventInput(event_id=uuid.uuid4(), type="view", user_id=user, item_id=item,
                   timestamp=NOW - timedelta(days=days_ago))
        for user, item, days_ago in (("ann", "sku-1", 3), ("ann", "sku-1", 3), ("bob", "sku-2", 5))],
        received_at=NOW - timedelta(minutes=30))
    roll_up_new_events(now=NOW)
    assert sum(DailyEventRollup.objects.values_list("events", flat=True)) == 3


def delete_anns_events(client):
    pks = Event.objects.filter(user__user_id="ann").values_list("pk", flat=True)
    return client.post("/admin/ingestion/event/", {
        "action": "delete_selected", "_selected_action": list(pks), "post": "yes"})


def delete_ann(client):
    return client.post(f"/admin/ingestion/enduser/{EndUser.objects.get(user_id='ann').pk}/delete/",
                       {"post": "yes"})


def delete_anns_item(client):
    return client.post(f"/admin/ingestion/item/{Item.objects.get(item_id='sku-1').pk}/delete/",
                       {"post": "yes"})


@pytest.mark.parametrize("delete", [delete_anns_events, delete_ann, delete_anns_item])
def test_deleted_events_leave_the_rollups_with_the_next_update(client, admin_user, rolled_up_shop,
                                                                delete):
    client.force_login(admin_user)

    response = delete(client)

    assert response.status_code == 302
    assert Event.objects.count() == 1
    roll_up_new_events(now=NOW + timedelta(minutes=1))
    assert list(DailyEventRollup.objects.values_list("events", flat=True)) == [1]
    assert list(UserDayRollup.objects.values_list("user__user_id", flat=True)) == ["bob"]


def test_an_edited_event_leaves_its_old_day_and_user_with_the_next_update(rolled_up_shop, rf,
                                                                         admin_user):
    """Moving an event to another user keeps every count by day, type and category, which is
    all the hourly check compares: only the edit's own mark rebuilds the day."""
    request = rf.post("/admin/ingestion/event/")
    request.user = admin_user
    event = Event.objects.filter(user__user_id="ann").first()
    event.user = EndUser.objects.get(user_id="bob")

    site._registry[Event].save_model(request, event, form=None, change=True)

    roll_up_new_events(now=NOW + timedelta(minutes=1))
    assert sorted(UserDayRollup.objects.values_list("user__user_id", "events")) == [
        ("ann", 1), ("bob", 1), ("bob", 1)]


def test_identity_links_are_made_by_sdks_not_typed_in_the_admin(admin_client):
    # A link typed here could point an alias at another alias, or at itself.
    assert admin_client.get(reverse("admin:ingestion_identitylink_add")).status_code == 403


def test_the_delete_confirmation_counts_the_events_instead_of_listing_them(
        client, admin_user, rolled_up_shop, django_assert_max_num_queries):
    client.force_login(admin_user)
    ann = EndUser.objects.get(user_id="ann")

    with django_assert_max_num_queries(12):
        page = client.get(f"/admin/ingestion/enduser/{ann.pk}/delete/")

    assert page.status_code == 200
    assert dict(page.context["model_count"]) == {"end users": 1, "events": 2}
    # No row of its events is loaded to be listed (a link to each, before).
    assert not any(f"/admin/ingestion/event/{pk}/change/" in page.content.decode()
                   for pk in ann.events.values_list("pk", flat=True))
