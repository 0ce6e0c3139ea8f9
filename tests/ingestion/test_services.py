import threading
import time
from datetime import UTC, datetime

import pytest
from django.db import connection
from django.utils import timezone

from ingestion import services
from ingestion.models import EndUser, Event, IdentityLink
from ingestion.selectors import person_of
from ingestion.services import link_identities, merge_traits
from ingestion.signals import events_with_text_stored

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def links() -> set[tuple[str, str]]:
    return set(IdentityLink.objects.values_list("alias__user_id", "person__user_id"))


@pytest.mark.django_db
class TestLinkIdentities:
    def test_repeating_a_link_changes_nothing(self):
        assert link_identities(links=[("anon", "u1")], linked_at=T0) == 1
        assert link_identities(links=[("anon", "u1"), ("anon", "u1")], linked_at=T0) == 0
        assert links() == {("anon", "u1")}

    def test_chains_collapse_onto_one_person(self):
        link_identities(links=[("anon-a", "u1")], linked_at=T0)
        link_identities(links=[("u1", "u2")], linked_at=T0)
        assert links() == {("anon-a", "u2"), ("u1", "u2")}
        assert person_of(user_id="anon-a").user_id == "u2"
        assert len(person_of(user_id="u2").user_pks) == 3

    def test_linking_back_to_an_alias_keeps_one_person(self):
        link_identities(links=[("anon", "u1")], linked_at=T0)
        link_identities(links=[("u1", "anon")], linked_at=T0)
        assert links() == {("anon", "u1")}

    def test_an_id_already_linked_stays_with_its_first_person(self):
        link_identities(links=[("shared-device", "u1")], linked_at=T0)
        link_identities(links=[("shared-device", "u2")], linked_at=T0)
        assert links() == {("shared-device", "u1")}


@pytest.mark.django_db(transaction=True)
def test_concurrent_links_leave_no_chain():
    """Ten requests at once link a ring of ids; whatever the order, every id ends on one
    person that is not itself an alias."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers; the lock under test is PostgreSQL's")
    ids = [f"id-{n}" for n in range(10)]
    pairs = [(ids[n], ids[(n + 1) % 10]) for n in range(10)]
    barrier = threading.Barrier(len(pairs))

    def send(pair):
        barrier.wait()
        try:
            link_identities(links=[pair], linked_at=T0)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(pair,)) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    persons = set(IdentityLink.objects.values_list("person_id", flat=True))
    aliases = set(IdentityLink.objects.values_list("alias_id", flat=True))
    assert len(persons) == 1 and not persons & aliases
    assert len(aliases) == 9


@pytest.mark.django_db
def test_traits_overwrite_and_set_once_only_fills_gaps():
    EndUser.objects.create(user_id="u1", traits={"plan": "free", "source": "ads"})
    merge_traits(traits={"u1": {"plan": "pro"}}, traits_once={"u1": {"source": "seo",
                                                                      "first_page": "/"}})
    assert EndUser.objects.get(user_id="u1").traits == {"plan": "pro", "source": "ads",
                                                        "first_page": "/"}


@pytest.mark.django_db(transaction=True)
def test_concurrent_trait_merges_keep_every_trait():
    """Ten requests at once each set another trait of one user: none is lost to another's
    read-modify-write."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers; the row lock under test is PostgreSQL's")
    EndUser.objects.create(user_id="u1")
    barrier = threading.Barrier(10)

    def send(number):
        barrier.wait()
        try:
            if number % 2:
                merge_traits(traits={"u1": {f"trait-{number}": number}}, traits_once={})
            else:
                services.upsert_users(users=[{"user_id": "u1",
                                              "traits": {f"trait-{number}": number}}])
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(number,)) for number in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert EndUser.objects.get(user_id="u1").traits == {f"trait-{n}": n for n in range(10)}


@pytest.mark.django_db
def test_a_batch_is_received_when_its_events_transaction_begins_not_when_it_arrived(
        monkeypatch):
    """The analytics rollups hold their watermark behind the transactions writing events;
    that covers a batch only if it was stamped no earlier than its events' transaction
    began, however long writing its users waited (behind another batch's row locks, say)."""
    users_written = {}
    original = services._ensure_users

    def slow_users(events):
        pks = original(events)
        time.sleep(0.01)  # a wait the old stamp, taken on arrival, would fall before
        users_written["at"] = timezone.now()
        return pks

    monkeypatch.setattr(services, "_ensure_users", slow_users)
    result = services.ingest_events(events=[{"type": "view", "user_id": "ann", "item_id": "sku-1"}])

    assert result.accepted == 1
    assert Event.objects.get().received_at >= users_written["at"]


@pytest.mark.django_db
def test_only_new_events_sentiment_reads_are_announced_for_scoring(
        django_capture_on_commit_callbacks):
    announced = []

    def receive(sender, event_pks, **kwargs):
        announced.extend(event_pks)

    headline = {"review_title": "Runs small"}
    events = [{"event_id": f"00000000-0000-4000-8000-00000000000{n}", "user_id": "ann",
               "item_id": "sku-1", **event} for n, event in enumerate([
                   {"type": "review", "text": "", "properties": headline},
                   {"type": "view", "properties": headline},  # a client's own property
                   {"type": "click", "text": "a note"},
                   {"type": "rating", "value": 4}])]
    events.append({**events[1], "type": "review"})  # a repeat: its first copy is stored
    events_with_text_stored.connect(receive)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            assert services.ingest_events(events=events).accepted == 4
    finally:
        events_with_text_stored.disconnect(receive)

    assert sorted(Event.objects.filter(pk__in=announced).values_list("type", flat=True)) == [
        "click", "review"]


@pytest.mark.django_db
def test_an_events_price_is_merged_into_the_item_as_it_is_when_written(monkeypatch):
    """An /items upsert or admin edit between the batch's read of the item and its write
    (here: during the comparison of the two) is kept, not overwritten with the read."""
    from ingestion import services
    from ingestion.models import Item

    Item.objects.create(item_id="sku-1", category="shirts", attributes={"colour": "red"})
    merge = services._merged_catalog_row
    edits = ["recategorised meanwhile"]

    def edited_meanwhile(row, title, category, attributes):
        if edits:
            edits.pop()
            Item.objects.filter(item_id="sku-1").update(
                category="tops", attributes={"colour": "red", "size": "M"})
        return merge(row, title, category, attributes)

    monkeypatch.setattr(services, "_merged_catalog_row", edited_meanwhile)

    services.merge_catalog_fields(rows={"sku-1": {"price": 12.5}})

    item = Item.objects.get(item_id="sku-1")
    assert item.category == "tops"
    assert item.attributes == {"colour": "red", "size": "M", "price": 12.5}


@pytest.mark.django_db
def test_properties_nested_past_what_python_encodes_are_that_events_reject():
    import sys

    nested: dict = {}
    for _ in range(sys.getrecursionlimit() + 100):
        nested = {"k": nested}

    result = services.ingest_events(events=[{"type": "signup", "user_id": "u1",
                                             "properties": nested}])

    assert (result.accepted, [error.field for error in result.errors]) == (0, ["properties"])
