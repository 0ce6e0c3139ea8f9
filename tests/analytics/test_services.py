"""Rollup maintenance: each event counted once, whatever runs twice, at once or crashes."""

import importlib
import json
import threading
import time
import uuid
from datetime import datetime, timedelta
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from analytics import services
from analytics.insights import trends
from analytics.insights.common import DateRange
from analytics.models import (
    TYPE_BITS,
    DailyEventRollup,
    DailyPropertyRollup,
    RollupDirtyDay,
    RollupDirtyItem,
    RollupState,
    UserDayActivity,
    UserDayRollup,
)
from ingestion.models import Event, Item
from ingestion.services import EventInput, store_events, upsert_items

NOW = timezone.now()
DAY = timezone.localdate(NOW - timedelta(days=3))
NOON = timezone.make_aware(datetime(DAY.year, DAY.month, DAY.day, 12))


def store(count: int, *, received_minutes_ago: float, user: str = "ann",
          item: str | None = "sku-1", event_type: str = "view", days_ago: float = 3) -> None:
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id=item, timestamp=NOW - timedelta(days=days_ago),
                                    value=2.5 if event_type == "purchase" else None)
                         for _ in range(count)],
                 received_at=NOW - timedelta(minutes=received_minutes_ago))


def store_at(hours: float, event_type: str, *, minutes_ago: float, user: str = "ann",
             item: str | None = "sku-1") -> None:
    """One event `hours` after noon on DAY."""
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id=item, timestamp=NOON + timedelta(hours=hours))],
                 received_at=NOW - timedelta(minutes=minutes_ago))


def store_orders(orders: list[str], *, received_minutes_ago: float, days_ago: float = 3) -> None:
    """A view per order id, each with the same plan."""
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                    item_id="sku-1", timestamp=NOW - timedelta(days=days_ago),
                                    properties={"plan": "pro", "order": order})
                         for order in orders],
                 received_at=NOW - timedelta(minutes=received_minutes_ago))


def rolled_events() -> int:
    return sum(DailyEventRollup.objects.values_list("events", flat=True))


@pytest.mark.django_db
class TestRollUp:
    def test_adds_what_arrived_before_the_watermark_and_moves_it(self):
        store(3, received_minutes_ago=30)
        store(2, received_minutes_ago=0.1)  # inside the lag: left to the next run

        progress = services.roll_up_new_events(now=NOW)

        assert (progress.events, progress.caught_up) == (3, True)
        assert progress.watermark == NOW - services._lag()
        assert rolled_events() == 3
        assert UserDayRollup.objects.get().events == 3
        assert RollupState.objects.get().last_events == 3

    def test_running_again_adds_nothing_and_late_events_join_their_day(self):
        store(3, received_minutes_ago=30, event_type="purchase")
        services.roll_up_new_events(now=NOW)
        assert services.roll_up_new_events(now=NOW).events == 0
        assert rolled_events() == 3

        # Received later, happened on the same day: added to that day's rows.
        store(2, received_minutes_ago=0, event_type="purchase", user="bob")
        services.roll_up_new_events(now=NOW + timedelta(minutes=5))

        row = DailyEventRollup.objects.get()
        assert (row.day, row.events, row.value_sum, row.value_events) == (DAY, 5, 12.5, 5)
        assert UserDayRollup.objects.count() == 2

    def test_a_users_day_over_all_categories_is_one_activity_row(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"},
                            {"item_id": "sku-2", "category": "toys"}])
        store(2, received_minutes_ago=30, item="sku-1")
        store(3, received_minutes_ago=30, item="sku-2")
        store(1, received_minutes_ago=30, item="sku-2", user="bob", days_ago=4)
        services.roll_up_new_events(now=NOW)

        assert UserDayRollup.objects.count() == 3  # ann in two categories, bob in one
        assert sorted(UserDayActivity.objects.values_list("user__user_id", "day", "events")) == [
            ("ann", DAY, 5), ("bob", DAY - timedelta(days=1), 1)]

    def test_a_users_day_in_a_category_counts_its_item_views_and_purchases(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        store(3, received_minutes_ago=30, event_type="view")
        store(2, received_minutes_ago=30, event_type="purchase")
        store(1, received_minutes_ago=30, event_type="add_to_cart")
        store(4, received_minutes_ago=30, event_type="view", item=None)  # no item
        services.roll_up_new_events(now=NOW)

        rows = {row.category: (row.events, row.views, row.purchases)
                for row in UserDayRollup.objects.all()}
        assert rows == {"books": (6, 3, 2), "": (4, 0, 0)}

    def test_a_users_day_marks_the_types_of_its_events_over_several_updates(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        store(1, received_minutes_ago=30, event_type="view")
        services.roll_up_new_events(now=NOW - timedelta(minutes=20))
        store(1, received_minutes_ago=10, event_type="view")  # its bit is set already
        store(1, received_minutes_ago=10, event_type="purchase")
        store(1, received_minutes_ago=10, event_type="signup", item=None)  # no bit
        services.roll_up_new_events(now=NOW)

        view_and_purchase = TYPE_BITS["view"] | TYPE_BITS["purchase"]
        assert UserDayActivity.objects.get().type_bits == view_and_purchase
        assert {row.category: row.type_bits for row in UserDayRollup.objects.all()} == {
            "books": view_and_purchase, "": 0}

    def test_a_users_day_keeps_the_first_time_of_each_type_over_several_updates(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        store_at(1, "view", item="sku-1", minutes_ago=30)
        store_at(3, "purchase", item=None, minutes_ago=30)
        services.roll_up_new_events(now=NOW - timedelta(minutes=20))
        store_at(-1, "view", item="sku-1", minutes_ago=10)  # late, and earlier that day
        store_at(2, "view", item="sku-1", minutes_ago=10)
        store_at(4, "purchase", item="sku-1", minutes_ago=10)  # later: the first stays
        services.roll_up_new_events(now=NOW)

        activity = UserDayActivity.objects.get()
        assert (activity.first_view_at, activity.first_purchase_at, activity.first_click_at) == (
            NOON - timedelta(hours=1), NOON + timedelta(hours=3), None)
        # Per category, only events on the category's items: the first purchase had none.
        assert {row.category: (row.first_view_at, row.first_purchase_at)
                for row in UserDayRollup.objects.all()} == {
            "books": (NOON - timedelta(hours=1), NOON + timedelta(hours=4)), "": (None, None)}

    def test_a_users_day_path_appends_the_events_of_later_updates(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        store_at(2, "add_to_cart", item="sku-1", minutes_ago=30)
        store_at(1, "view", item="sku-1", minutes_ago=30)  # received together, happened first
        store_at(1.5, "view", item="sku-1", minutes_ago=30)
        store_at(1.7, "signup", item=None, minutes_ago=30)
        services.roll_up_new_events(now=NOW - timedelta(minutes=20))
        store_at(3, "add_to_cart", item="sku-1", minutes_ago=10)
        store_at(4, "purchase", item="sku-1", minutes_ago=10)
        services.roll_up_new_events(now=NOW)

        # Repeats in a row fold within an update; readers fold across updates and days.
        assert json.loads(UserDayActivity.objects.get().path) == [
            "view", "signup", "add_to_cart", "add_to_cart", "purchase"]
        assert {row.category: json.loads(row.path) for row in UserDayRollup.objects.all()} == {
            "books": ["view", "add_to_cart", "add_to_cart", "purchase"], "": ["signup"]}
        assert not RollupDirtyDay.objects.exists()

    def test_a_late_event_inside_a_rolled_up_day_takes_its_place_in_the_path(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        store_at(1, "view", minutes_ago=30)
        store_at(3, "purchase", minutes_ago=30)
        store_at(1, "view", minutes_ago=30, user="bob")
        store_at(2, "click", minutes_ago=30, user="bob")
        services.roll_up_new_events(now=NOW - timedelta(minutes=20))
        store_at(2, "add_to_cart", minutes_ago=10)  # between ann's two rolled up
        store_at(3, "click", minutes_ago=10)  # at the time of ann's last one: after it
        store_at(2, "purchase", minutes_ago=10, user="bob")  # at bob's last one, too
        services.roll_up_new_events(now=NOW)

        def paths(model):
            return {(row.user.user_id, getattr(row, "category", None)): json.loads(row.path)
                    for row in model.objects.select_related("user")}

        assert paths(UserDayActivity) == {
            ("ann", None): ["view", "add_to_cart", "purchase", "click"],
            ("bob", None): ["view", "click", "purchase"]}
        assert paths(UserDayRollup) == {
            ("ann", "books"): ["view", "add_to_cart", "purchase", "click"],
            ("bob", "books"): ["view", "click", "purchase"]}
        assert not RollupDirtyDay.objects.exists()

    @pytest.mark.parametrize("migration_name", ["0003_user_activity_rollup",
                                                "0004_rollup_type_bits",
                                                "0007_rollup_first_occurrences",
                                                "0008_rollup_day_paths"])
    def test_upgrading_to_the_new_rollup_shapes_starts_the_rollups_over(self, migration_name):
        """Rollups built before the activity table, the views/purchases figures or the type
        bits existed lack them: the migration empties them, so readers use raw events until
        rebuilt."""
        store(3, received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)
        RollupDirtyDay.objects.create(day=DAY)
        migration = importlib.import_module(f"analytics.migrations.{migration_name}").Migration
        start_over = next(operation.code for operation in migration.operations
                          if getattr(operation, "code", None) is not None
                          and operation.code.__name__ == "empty_the_rollups")

        if connection.vendor == "postgresql":
            # This test's inserts left foreign-key checks pending in its transaction, which
            # TRUNCATE refuses; migrate's transaction starts without any.
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

        start_over(django_apps, SimpleNamespace(connection=connection))

        assert rolled_events() == 0 and not UserDayRollup.objects.exists()
        assert not UserDayActivity.objects.exists() and not RollupDirtyDay.objects.exists()
        assert services.pending_events() == 3
        assert services.roll_up_new_events(now=NOW).events == 3
        assert UserDayActivity.objects.get().events == 3

    def test_upgrading_to_linked_days_links_the_rows_rolled_up_before(self):
        for days_ago in (1, 3):
            store(1, received_minutes_ago=60, days_ago=days_ago)
        services.roll_up_new_events(now=NOW)
        UserDayActivity.objects.update(previous_day=None)  # as rolled up before 0013
        migration = importlib.import_module(
            "analytics.migrations.0013_user_day_activity_previous_day").Migration
        link = next(operation.code for operation in migration.operations
                    if getattr(operation, "code", None) is not None
                    and operation.code.__name__ == "link_previous_days")

        link(django_apps, SimpleNamespace(connection=connection))

        assert list(UserDayActivity.objects.order_by("day").values_list("previous_day", flat=True)) \
            == [None, timezone.localdate(NOW - timedelta(days=3))]

    def test_chunks_add_up_to_one_run_even_when_a_batch_shares_one_received_at(self, monkeypatch):
        monkeypatch.setattr(services, "ROLLUP_CHUNK_EVENTS", 2)
        store(5, received_minutes_ago=40)  # one batch, one received_at, more than a chunk
        store(3, received_minutes_ago=20, user="bob")
        chunks = []

        progress = services.roll_up_new_events(now=NOW, on_chunk=chunks.append)

        assert progress.events == 8 and rolled_events() == 8
        assert len(chunks) >= 2 and chunks[-1].caught_up

    def test_a_crash_mid_update_keeps_nothing_of_it(self, monkeypatch):
        services.roll_up_new_events(now=NOW - timedelta(hours=1))  # the state row exists
        store(4, received_minutes_ago=30)
        real_add = services._add

        def add_then_crash(events, **kwargs):
            real_add(events, **kwargs)
            assert rolled_events() == 4  # added inside the transaction...
            raise RuntimeError("worker killed")

        monkeypatch.setattr(services, "_add", add_then_crash)
        with pytest.raises(RuntimeError):
            services.roll_up_new_events(now=NOW)
        assert rolled_events() == 0  # ...and gone with it
        assert RollupState.objects.get().watermark < NOW - timedelta(minutes=30)

        monkeypatch.setattr(services, "_add", real_add)
        assert services.roll_up_new_events(now=NOW).events == 4
        assert rolled_events() == 4

    def test_a_database_error_that_is_not_contention_is_raised_not_skipped(self, monkeypatch):
        store(1, received_minutes_ago=30)

        def broken(*args, **kwargs):
            raise OperationalError("disk I/O error")

        monkeypatch.setattr(services, "_chunk_end", broken)
        with pytest.raises(OperationalError):
            services.roll_up_new_events(now=NOW)

    def test_a_changed_item_category_rebuilds_its_days(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        store(2, received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)

        upsert_items(items=[{"item_id": "sku-1", "category": "toys"}])
        services.roll_up_new_events(now=NOW)

        assert list(DailyEventRollup.objects.values_list("category", "events")) == [("toys", 2)]
        assert list(UserDayRollup.objects.values_list("category", flat=True)) == ["toys"]
        assert not RollupDirtyItem.objects.exists() and not RollupDirtyDay.objects.exists()

    def test_deleting_events_marks_their_days_rolled_up_or_not(self):
        """An update that waited for the lock reads the events as they were before the
        deletion: days it has not rolled up yet must be rebuilt too."""
        store(1, received_minutes_ago=30, days_ago=3)
        services.roll_up_new_events(now=NOW)
        store(1, received_minutes_ago=0, days_ago=5)  # not rolled up yet

        services.mark_days_of_changing_events(events=Event.objects.all())

        assert set(RollupDirtyDay.objects.values_list("day", flat=True)) == {
            DAY, timezone.localdate(NOW - timedelta(days=5))}

    def test_each_users_day_links_to_their_day_before_a_late_one_included(self):
        store(1, received_minutes_ago=60, days_ago=1)
        store(1, received_minutes_ago=60, days_ago=5)
        store(1, received_minutes_ago=60, days_ago=2, user="bob")
        services.roll_up_new_events(now=NOW)
        store(1, received_minutes_ago=0, days_ago=3)  # late: between ann's two days
        services.roll_up_new_events(now=NOW + timedelta(minutes=5))

        def day(days_ago):
            return timezone.localdate(NOW - timedelta(days=days_ago))

        assert set(UserDayActivity.objects.values_list("user__user_id", "day", "previous_day")) \
            == {("ann", day(5), None), ("ann", day(3), day(5)), ("ann", day(1), day(3)),
                ("bob", day(2), None)}

    def test_a_day_rebuilt_without_a_users_events_links_their_next_day_past_it(
            self, monkeypatch):
        monkeypatch.setattr(services, "_USERS_PER_STATEMENT", 1)  # one user per statement
        for user in ("ann", "bob", "cy"):
            for days_ago in (1, 3, 5):
                store(1, received_minutes_ago=60, days_ago=days_ago, user=user)
        services.roll_up_new_events(now=NOW)
        middle = Event.objects.filter(timestamp__date=timezone.localdate(NOW - timedelta(days=3)),
                                      user__user_id__in=["ann", "bob"])

        with transaction.atomic():
            services.mark_days_of_changing_events(events=middle)
            middle.delete()
        services.roll_up_new_events(now=NOW)

        last_day = timezone.localdate(NOW - timedelta(days=1))
        linked = dict(UserDayActivity.objects.filter(day=last_day)
                      .values_list("user__user_id", "previous_day"))
        assert linked == {"ann": timezone.localdate(NOW - timedelta(days=5)),
                          "bob": timezone.localdate(NOW - timedelta(days=5)),
                          "cy": timezone.localdate(NOW - timedelta(days=3))}

    def test_the_hourly_check_links_days_added_without_their_previous_day(self):
        for days_ago in (1, 3):
            store(1, received_minutes_ago=60, days_ago=days_ago)
        services.roll_up_new_events(now=NOW)
        # As a worker running the code before migration 0013 adds them.
        UserDayActivity.objects.update(previous_day=None)
        RollupState.objects.update(checked_at=None)  # the check is due

        services.roll_up_new_events(now=NOW)

        assert list(UserDayActivity.objects.order_by("day").values_list("previous_day", flat=True)) \
            == [None, timezone.localdate(NOW - timedelta(days=3))]

    def test_marking_an_item_again_moves_its_mark(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        services.mark_items_recategorised(item_pks=[Item.objects.get().pk])
        first = RollupDirtyItem.objects.get().marked_at

        services.mark_items_recategorised(item_pks=[Item.objects.get().pk])

        assert RollupDirtyItem.objects.get().marked_at > first

    def test_many_changed_days_are_rebuilt_a_few_per_update(self, monkeypatch):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        for days_ago in range(1, 13):
            store(1, received_minutes_ago=30, days_ago=days_ago)
        services.roll_up_new_events(now=NOW)
        upsert_items(items=[{"item_id": "sku-1", "category": "toys"}])
        chunks = []

        services.roll_up_new_events(now=NOW, on_chunk=chunks.append)

        assert len(chunks) == 3  # 12 days, DIRTY_DAYS_PER_CHUNK = 5 per update
        assert set(DailyEventRollup.objects.values_list("category", flat=True)) == {"toys"}

    def test_the_hourly_check_rebuilds_recent_days_that_differ_from_their_events(self):
        """What the watermark cannot see: events stored behind it (a web host whose clock
        runs behind the worker's by more than the lag) and events deleted by SQL or the
        shell rather than the admin."""
        store(2, received_minutes_ago=30)
        store(1, received_minutes_ago=30, event_type="purchase", days_ago=4)
        services.roll_up_new_events(now=NOW)
        store(1, received_minutes_ago=10, days_ago=5)  # behind the watermark
        Event.objects.filter(type="purchase").delete()  # not through the admin

        services.roll_up_new_events(now=NOW + timedelta(minutes=59))
        assert rolled_events() == 3  # within the hour: as it was

        services.roll_up_new_events(now=NOW + timedelta(minutes=61))
        assert sorted(DailyEventRollup.objects.values_list("day", "event_type", "events")) == [
            (DAY - timedelta(days=2), "view", 1), (DAY, "view", 2)]
        assert sorted(UserDayActivity.objects.values_list("day", "events")) == [
            (DAY - timedelta(days=2), 1), (DAY, 2)]
        assert not RollupDirtyDay.objects.exists()

    def test_the_hourly_check_leaves_days_alone_that_match_their_events(self):
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        store(2, received_minutes_ago=30)
        store(1, received_minutes_ago=30, event_type="purchase", item=None, days_ago=6)
        services.roll_up_new_events(now=NOW)
        rebuilt = []
        original = services._rebuild_day

        def recording(day, **kwargs):
            rebuilt.append(day)
            original(day, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(services, "_rebuild_day", recording)
            services.roll_up_new_events(now=NOW + timedelta(hours=2))

        assert rebuilt == [] and rolled_events() == 3
        assert RollupState.objects.get().checked_at == NOW + timedelta(hours=2)

    def test_a_check_dated_after_now_is_due_and_kept_when_nothing_new_arrived(self):
        """A worker clock stepped back must not hold off the next check for the gap; an
        update with nothing new to add still records the check it made."""
        store(1, received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)
        store(1, received_minutes_ago=30, days_ago=4)  # behind the watermark

        services.roll_up_new_events(now=NOW - timedelta(minutes=5))

        assert rolled_events() == 2
        assert RollupState.objects.get().checked_at == NOW - timedelta(minutes=5)

    def test_days_cut_in_another_time_zone_are_rolled_up_again(self, settings):
        store(2, received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)
        RollupState.objects.update(time_zone="Pacific/Auckland")

        services.roll_up_new_events(now=NOW)

        assert rolled_events() == 2
        assert RollupState.objects.get().time_zone == settings.TIME_ZONE

    def test_rebuilding_days_recomputes_them_from_raw_events(self):
        store(3, received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)
        DailyEventRollup.objects.update(events=99)  # damaged
        UserDayActivity.objects.update(events=99)

        assert services.rebuild_days(since=DAY - timedelta(days=1)) >= 2

        assert rolled_events() == 3
        assert UserDayActivity.objects.get().events == 3

    def test_a_reset_leaves_everything_to_the_raw_tail_until_rolled_up_again(self):
        store(3, received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)

        services.reset_rollups()

        assert rolled_events() == 0
        assert not UserDayActivity.objects.exists()
        assert RollupState.objects.get().watermark == services.BEGINNING
        assert services.pending_events() == 3

    def test_the_chosen_property_keys_are_counted_per_day_type_category_and_value(
            self, settings):
        settings.ANALYTICS_ROLLUP_PROPERTIES = ["plan"]
        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        # Any length: the unique key holds the value's MD5, not the value.
        long_plan = "enterprise " * 400
        for plan, item in (("pro", "sku-1"), ("pro", "sku-1"), ("pro", None),
                           (long_plan, "sku-1"), (3, "sku-1"), (None, "sku-1")):
            store_events(events=[EventInput(
                event_id=uuid.uuid4(), type="purchase", user_id="ann", item_id=item,
                timestamp=NOON, value=2.0, properties={} if plan is None else {"plan": plan})],
                received_at=NOW - timedelta(minutes=30))

        services.roll_up_new_events(now=NOW)

        def rows(*, every_category):
            return set(DailyPropertyRollup.objects.filter(every_category=every_category)
                       .values_list("day", "event_type", "key", "category", "value", "events",
                                    "value_sum", "value_events"))

        assert rows(every_category=False) == {
            (DAY, "purchase", "plan", "books", "pro", 2, 4.0, 2),
            (DAY, "purchase", "plan", "", "pro", 1, 2.0, 1),
            (DAY, "purchase", "plan", "books", long_plan, 1, 2.0, 1),
            (DAY, "purchase", "plan", "books", "3", 1, 2.0, 1),
            (DAY, "purchase", "plan", "books", services.NONE_VALUE, 1, 2.0, 1)}
        assert rows(every_category=True) == {
            (DAY, "purchase", "plan", "", "pro", 3, 6.0, 3),
            (DAY, "purchase", "plan", "", long_plan, 1, 2.0, 1),
            (DAY, "purchase", "plan", "", "3", 1, 2.0, 1),
            (DAY, "purchase", "plan", "", services.NONE_VALUE, 1, 2.0, 1)}

    def test_a_property_key_added_later_is_counted_over_the_whole_log(self, settings):
        def view(received_minutes_ago):
            store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                            item_id="sku-1", timestamp=NOON,
                                            properties={"plan": "pro", "browser": "Safari"})],
                         received_at=NOW - timedelta(minutes=received_minutes_ago))

        upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
        view(received_minutes_ago=30)
        settings.ANALYTICS_ROLLUP_PROPERTIES = ["plan"]
        services.roll_up_new_events(now=NOW)
        view(received_minutes_ago=0)  # inside the lag: left to the next update

        settings.ANALYTICS_ROLLUP_PROPERTIES = ["browser"]
        services.roll_up_new_events(now=NOW)

        # Per category and over every category, counted over the log like an update's.
        assert sorted(DailyPropertyRollup.objects.values_list(
            "key", "every_category", "category", "value", "events")) == [
            ("browser", False, "books", "Safari", 1), ("browser", True, "", "Safari", 1)]
        assert RollupState.objects.get().property_keys == ["browser"]
        services.roll_up_new_events(now=NOW + timedelta(minutes=5))
        assert set(DailyPropertyRollup.objects.values_list("events", flat=True)) == {2}

    def test_a_key_taking_more_values_a_day_than_the_limit_stops_being_counted(
            self, settings):
        settings.ANALYTICS_ROLLUP_PROPERTIES = ["plan", "order"]
        settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 3
        store_orders(["o1", "o2"], received_minutes_ago=30)
        services.roll_up_new_events(now=NOW - timedelta(minutes=25))
        assert RollupState.objects.get().property_keys == ["plan", "order"]

        store_orders(["o3", "o4"], received_minutes_ago=20)  # a fourth value that day
        services.roll_up_new_events(now=NOW - timedelta(minutes=15))

        state = RollupState.objects.get()
        assert state.property_keys == ["plan"]
        assert state.refused_property_keys == {
            "order": {"day": DAY.isoformat(), "values": 4, "limit": 3}}
        assert set(DailyPropertyRollup.objects.values_list("key", flat=True)) == {"plan"}
        store_orders(["o5"], received_minutes_ago=10)
        with CaptureQueriesContext(connection) as queries:
            services.roll_up_new_events(now=NOW)
        # Neither counted over the log again nor looked at: the refusal stands.
        assert not [query for query in queries.captured_queries
                    if ("'order'" in query["sql"] or '"order"' in query["sql"])
                    and "analytics_rollupstate" not in query["sql"]]
        assert set(DailyPropertyRollup.objects.values_list("key", flat=True)) == {"plan"}
        # Read from events instead, exactly.
        by_order = trends.trends(date_range=DateRange(start=DAY, end=DAY), event_types=["view"],
                                 breakdown="order")
        assert {series["breakdown_value"]: series["total"] for series in by_order["series"]} \
            == {"o1": 1, "o2": 1, "o3": 1, "o4": 1, "o5": 1}

    def test_a_key_added_with_too_many_values_a_day_is_refused_before_it_is_counted(
            self, settings):
        settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 3
        store_orders(["o1", "o2", "o3", "o4"], received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)

        settings.ANALYTICS_ROLLUP_PROPERTIES = ["order"]
        with CaptureQueriesContext(connection) as queries:
            services.roll_up_new_events(now=NOW)

        assert RollupState.objects.get().refused_property_keys["order"]["values"] == 4
        assert not any("INSERT INTO analytics_dailypropertyrollup" in query["sql"]
                       for query in queries.captured_queries)

    def test_a_key_crowded_only_on_older_days_is_refused_after_counting_the_log(
            self, settings):
        settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 3
        store_orders(["o1", "o2", "o3", "o4"], received_minutes_ago=30, days_ago=20)
        store_orders(["o5"], received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)

        settings.ANALYTICS_ROLLUP_PROPERTIES = ["order"]
        services.roll_up_new_events(now=NOW)

        state = RollupState.objects.get()
        assert state.property_keys == []
        assert state.refused_property_keys["order"]["values"] == 4
        assert not DailyPropertyRollup.objects.exists()

    def test_a_key_refused_again_under_a_new_limit_keeps_no_rows(self, settings):
        settings.ANALYTICS_ROLLUP_PROPERTIES = ["order"]
        settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 3
        store_orders(["o1", "o2", "o3", "o4", "o5"], received_minutes_ago=30, days_ago=20)
        store_orders(["o6"], received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)
        assert RollupState.objects.get().refused_property_keys["order"]["limit"] == 3

        # The recent week passes the new limit, so the log is counted; its older day does not.
        settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 4
        services.roll_up_new_events(now=NOW)

        assert RollupState.objects.get().refused_property_keys == {
            "order": {"day": (DAY - timedelta(days=17)).isoformat(), "values": 5, "limit": 4}}
        assert not DailyPropertyRollup.objects.exists()

    def test_a_refused_key_is_counted_again_once_the_limit_allows_it(self, settings):
        settings.ANALYTICS_ROLLUP_PROPERTIES = ["order"]
        settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 3
        store_orders(["o1", "o2", "o3", "o4"], received_minutes_ago=30)
        services.roll_up_new_events(now=NOW)
        assert not DailyPropertyRollup.objects.exists()

        settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES = 10
        services.roll_up_new_events(now=NOW)

        state = RollupState.objects.get()
        assert (state.property_keys, state.refused_property_keys) == (["order"], {})
        assert DailyPropertyRollup.objects.filter(every_category=True).count() == 4

    def test_rebuilding_a_day_recounts_its_property_values(self, settings):
        settings.ANALYTICS_ROLLUP_PROPERTIES = ["plan"]
        store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                        item_id="sku-1", timestamp=NOON,
                                        properties={"plan": "pro"})],
                     received_at=NOW - timedelta(minutes=30))
        services.roll_up_new_events(now=NOW)
        DailyPropertyRollup.objects.update(events=99)  # damaged

        services.rebuild_days(since=DAY)

        assert sorted(DailyPropertyRollup.objects.values_list(
            "every_category", "value", "events")) == [(False, "pro", 1), (True, "pro", 1)]

    def test_status_reports_the_lag_of_the_oldest_event_waiting(self, settings):
        settings.ANALYTICS_ROLLUP_MAX_LAG_SECONDS = 600
        store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                        item_id="sku-1", timestamp=timezone.now())],
                     received_at=timezone.now() - timedelta(minutes=30))
        status = services.rollup_status()
        assert status["pending_events"] == 1 and status["lagging"]
        assert 29 * 60 < status["lag_seconds"] < 31 * 60

        services.roll_up_new_events(now=timezone.now())

        status = services.rollup_status()
        assert (status["pending_events"], status["lag_seconds"], status["lagging"]) == (0, 0.0, False)


@pytest.fixture
def no_rollup_after_ingestion():
    """Committed batches would roll themselves up at once (eager Celery in tests)."""
    from analytics.receivers import schedule_rollup
    from ingestion.signals import events_stored

    events_stored.disconnect(schedule_rollup)
    yield
    events_stored.connect(schedule_rollup)


def roll_up_recording(outcomes: list) -> None:
    """A worker thread's update: appends the events it rolled up, or "busy"."""
    try:
        outcomes.append(services.roll_up_new_events(now=NOW).events)
    except services.RollupBusy:
        outcomes.append("busy")
    finally:
        connection.close()


@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_count_each_event_once(no_rollup_after_ingestion, monkeypatch):
    store(50, received_minutes_ago=30)
    store(30, received_minutes_ago=20, user="bob")
    outcomes = []

    def worker():
        roll_up_recording(outcomes)

    # The first worker holds the rollup lock long enough for the second to run into it.
    real_chunk_end = services._chunk_end

    def slow_chunk_end(*args):
        time.sleep(0.5)
        return real_chunk_end(*args)

    monkeypatch.setattr(services, "_chunk_end", slow_chunk_end)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes, key=str) in ([0, 80], [80, "busy"])
    assert rolled_events() == 80 == Event.objects.count()
    assert UserDayRollup.objects.get(user__user_id="bob").events == 30



@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("writer_open_longer_than_the_hold_back", [False, True])
def test_a_batch_that_commits_after_the_lag_is_still_counted(
        no_rollup_after_ingestion, settings, writer_open_longer_than_the_hold_back):
    """A batch held up (behind a lock, say) for longer than the lag commits events whose
    received_at an update running meanwhile would have passed, so they would never be
    counted: the update holds the watermark back for the batch's transaction instead, up
    to ANALYTICS_ROLLUP_MAX_LAG_SECONDS; past that the hourly check counts them."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite writers take turns: none is mid-transaction while an update runs")
    settings.ANALYTICS_ROLLUP_LAG_SECONDS = 1
    settings.ANALYTICS_ROLLUP_MAX_LAG_SECONDS = 1 if writer_open_longer_than_the_hold_back else 600
    written, release = threading.Event(), threading.Event()

    def held_up_batch():
        try:
            with transaction.atomic():
                store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                                item_id="sku-1", timestamp=timezone.now())
                                     for _ in range(2)], received_at=None)
                written.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    batch = threading.Thread(target=held_up_batch)
    batch.start()
    try:
        assert written.wait(timeout=30)
        time.sleep(1.5)  # past the lag
        services.roll_up_new_events(now=timezone.now())
    finally:
        release.set()
        batch.join()
    services.roll_up_new_events(now=timezone.now() + timedelta(seconds=5))
    assert rolled_events() == (0 if writer_open_longer_than_the_hold_back else 2)

    services.roll_up_new_events(now=timezone.now() + timedelta(hours=2))
    assert rolled_events() == 2 == Event.objects.count()


@pytest.mark.django_db(transaction=True)
def test_deleted_events_are_marked_only_inside_the_deleting_transaction():
    """Outside it the rollup lock would be gone before the events are."""
    with pytest.raises(RuntimeError, match="changing transaction"):
        services.mark_days_of_changing_events(events=Event.objects.all())
    assert not RollupDirtyDay.objects.exists()

@pytest.mark.django_db(transaction=True)
def test_an_update_waiting_on_an_admin_deletion_leaves_its_days_marked(no_rollup_after_ingestion):
    """The day is marked already (an earlier deletion or category change not yet worked
    off), so the deletion's own mark adds no row: the update that read the events before
    the deletion committed must not rebuild the day from them and take the mark away."""
    store(3, received_minutes_ago=30)
    services.roll_up_new_events(now=NOW)
    RollupDirtyDay.objects.create(day=DAY)
    locked, outcomes = threading.Event(), []

    def admin_deletes():
        try:
            with transaction.atomic():
                services.mark_days_of_changing_events(events=Event.objects.all())
                locked.set()
                time.sleep(0.5)  # the update below reads the events, then waits for the lock
                Event.objects.all().delete()
        finally:
            connection.close()

    def update():
        locked.wait()
        roll_up_recording(outcomes)

    threads = [threading.Thread(target=admin_deletes), threading.Thread(target=update)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    services.roll_up_new_events(now=NOW)

    assert outcomes in ([0], ["busy"])
    assert rolled_events() == 0 == Event.objects.count()
