"""Rollups answer exactly what raw events answer: random shops, rolled up part of the way
(the rest is the raw tail), with late events, aliases linked after the rollup, an item
moved to another category, events deleted, category filters and ranges that end today."""

import random
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from analytics import services
from analytics.insights import (
    funnels,
    items,
    lifecycle,
    overview,
    paths,
    retention,
    sources,
    stickiness,
    trends,
)
from analytics.insights.common import DateRange, analytics_queries
from analytics.models import DailyEventRollup, UserDayActivity, UserDayRollup
from ingestion.models import EndUser, Event, IdentityLink, Item
from ingestion.services import EventInput, link_identities, store_events, upsert_items

pytestmark = pytest.mark.django_db

EVENT_TYPES = ("view", "view", "view", "click", "add_to_cart", "purchase", "signup")
CATEGORIES = ("books", "toys", "", "other", "(none)")
# Values of the "plan" property the rollups count (a number, a boolean, JSON null, the
# breakdown's own "(none)", a value longer than a PostgreSQL index entry); None: no plan.
PLANS = ("free", "pro", "", 3, True, {"plan": None}, "(none)", "enterprise " * 300, None)


@pytest.fixture
def activity_source():
    """Overrides the package's raw/rollups switch: these tests compare the two themselves."""
    return "compared"


def shop(draw: random.Random, *, now) -> None:
    """Users, items and events over the last 50 days, stored in batches received at
    different times: most soon after they happened, some weeks late (late events)."""
    upsert_items(items=[{"item_id": f"sku-{n}", "category": draw.choice(CATEGORIES)}
                        for n in range(6)])
    batches: dict = {}
    for _ in range(draw.randint(20, 160)):
        happened = now - timedelta(days=draw.uniform(0, 50))
        late = draw.random() < 0.15
        received = now - timedelta(days=draw.uniform(0, 3)) if late else \
            min(happened + timedelta(minutes=draw.uniform(0, 90)), now)
        event_type = draw.choice(EVENT_TYPES)
        plan = draw.choice(PLANS)
        batches.setdefault(received.replace(microsecond=0), []).append(EventInput(
            event_id=uuid.uuid4(), type=event_type, user_id=f"u{draw.randint(1, 12)}",
            item_id=(None if event_type == "signup" or draw.random() < 0.1
                     else f"sku-{draw.randint(0, 5)}"),
            timestamp=happened,
            value=round(draw.uniform(1, 90), 2) if event_type == "purchase" else None,
            properties=(plan if isinstance(plan, dict) else {} if plan is None
                        else {"plan": plan})))
    for received, events in sorted(batches.items()):
        store_events(events=events, received_at=received)


def answers(today) -> dict:
    """Every rolled-up insight, in the variants the dashboards ask for."""
    results = {}
    for days in (1, 7, 45):
        date_range = DateRange(start=today - timedelta(days=days - 1), end=today)
        for category in (None, "books", ""):
            key = (days, category)
            results[("overview", key)] = overview.overview(date_range=date_range,
                                                           category=category or None)
            for period in ("day", "week"):
                results[("retention", period, key)] = retention.retention(
                    date_range=date_range, period=period, category=category or None)
            for interval in ("day", "week", "month"):
                results[("lifecycle", interval, key)] = lifecycle.lifecycle(
                    date_range=date_range, interval=interval, category=category or None)
            for interval in ("week", "month"):
                results[("stickiness", interval, key)] = stickiness.stickiness(
                    date_range=date_range, interval=interval, category=category or None)
            # The first step from the rollups' first occurrences; "signup" has no type bit,
            # so its funnel reads raw events throughout.
            for steps in (["view", "add_to_cart", "purchase"], ["purchase", "view"],
                          ["signup", "view"]):
                results[("funnel", tuple(steps), key)] = funnels.funnel(
                    date_range=date_range, steps=steps, window_days=3,
                    category=category or None, breakdown="category")
            # Viewers and purchasers per category (the other item figures read raw events).
            results[("categories", key)] = items.category_performance(
                date_range=date_range, category=category or None, order_by="conversion")
            for measure in ("count", "users", "sum", "average"):
                for breakdown in (None, "category"):
                    results[("trends", measure, breakdown, key)] = trends.trends(
                        date_range=date_range, event_types=["view", "purchase", "signup"],
                        measure=measure, interval="week", category=category or None,
                        breakdown=breakdown, compare=True)
            # Summed from DailyPropertyRollup, with or without a category filter (the
            # rollups count "plan": ANALYTICS_ROLLUP_PROPERTIES); "(none)" is the bucket of
            # events without a plan, not a plan to filter on.
            for measure in ("count", "sum", "average"):
                results[("trends", measure, "plan", key)] = trends.trends(
                    date_range=date_range, event_types=["view", "purchase", "signup"],
                    measure=measure, interval="week", category=category or None,
                    breakdown="plan", compare=True)
                for plan in ("pro", "3", "", "(none)"):
                    results[("trends", measure, "plan =", plan, key)] = trends.trends(
                        date_range=date_range, event_types=["view", "purchase", "signup"],
                        measure=measure, interval="day", category=category or None,
                        property_filter=("plan", plan), compare=True)
                    # From the rows per category: events without an item are "(none)".
                    results[("trends", measure, "plan =", plan, "category", key)] = \
                        trends.trends(date_range=date_range,
                                      event_types=["view", "purchase", "signup"],
                                      measure=measure, interval="week",
                                      category=category or None,
                                      property_filter=("plan", plan), breakdown="category",
                                      compare=True)
            # Joined from the rolled-up days' paths (a late event's user-day recomputed by the
            # update); persons of the raw tail and of an alias's day shared with its person
            # from raw events.
            for anchor, direction in ((None, "after"), ("view", "after"), ("purchase", "before"),
                                      (None, "before"), ("signup", "after")):
                results[("paths", anchor, direction, key)] = paths.paths(
                    date_range=date_range, event_type=anchor, direction=direction, steps=5,
                    category=category or None)
            # Unique persons of standard types only: counted over the rollups' person-days.
            for breakdown in (None, "category"):
                for interval in ("day", "week", "month"):
                    results[("trends", "standard types", interval, breakdown, key)] = \
                        trends.trends(date_range=date_range, event_types=["view", "purchase"],
                                      measure="users", interval=interval,
                                      category=category or None, breakdown=breakdown,
                                      compare=True)
    return results


def assert_same_from_rollups_and_raw(today) -> None:
    with analytics_queries(), sources.raw_events_only():
        raw = answers(today)
    with analytics_queries():
        assert sources.rollup_watermark() is not None
        rolled = answers(today)
    assert rolled.keys() == raw.keys()
    for key in raw:
        assert rounded(rolled[key]) == rounded(raw[key]), key


def rounded(value):
    """Floats to 6 places (sums add in another order from rollups), all else as it is."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


@override_settings(ANALYTICS_ROLLUP_PROPERTIES=["plan"])
# No shrinking: each example is a whole shop read some 400 times, and shrinking one took
# minutes; a failure reports its seed, which reproduces it.
@settings(max_examples=8, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(seed=st.integers(min_value=0, max_value=2**32 - 1), rolled_share=st.floats(0, 1))
def test_rollups_answer_exactly_what_raw_events_answer(seed, rolled_share):
    for model in (Event, IdentityLink, EndUser, Item):
        model.objects.all().delete()
    services.reset_rollups()
    draw = random.Random(seed)
    now = timezone.now()
    shop(draw, now=now)
    received = sorted(Event.objects.values_list("received_at", flat=True))
    # Roll up part of the log: the events received after the cut are the raw tail.
    cut = received[int(rolled_share * (len(received) - 1))]
    services.roll_up_new_events(now=cut + services._lag())
    assert_same_from_rollups_and_raw(timezone.localdate(now))

    # After the rollup: an alias linked to a person, and an item moved to another category.
    link_identities(links=[("u1", "u2"), ("u3", "u4")], linked_at=now)
    moved = Item.objects.order_by("item_id").first()
    upsert_items(items=[{"item_id": moved.item_id,
                         "category": "toys" if moved.category != "toys" else "books"}])
    services.roll_up_new_events(now=now + services._lag())
    assert_same_from_rollups_and_raw(timezone.localdate(now))

    # Events deleted as the admin deletes them: their days are rebuilt, and a user's days
    # after one left without events link past it.
    deleted = Event.objects.filter(pk__in=draw.sample(
        sorted(Event.objects.values_list("pk", flat=True)), k=Event.objects.count() // 4))
    with transaction.atomic():
        services.mark_days_of_changing_events(events=deleted)
        deleted.delete()
    services.roll_up_new_events(now=now + services._lag())
    assert_same_from_rollups_and_raw(timezone.localdate(now))


@pytest.mark.parametrize("users_per_query, max_tail_events", [(2, 100_000), (5_000, 0)])
def test_paths_of_many_tail_persons_read_in_several_queries_or_one_pass_are_exact(
        monkeypatch, users_per_query, max_tail_events):
    now = timezone.now()
    shop(random.Random(7), now=now)
    received = sorted(Event.objects.values_list("received_at", flat=True))
    services.roll_up_new_events(now=received[len(received) // 2] + services._lag())
    link_identities(links=[("u1", "u2"), ("u3", "u4")], linked_at=now)
    monkeypatch.setattr(paths, "RAW_USERS_PER_QUERY", users_per_query)
    monkeypatch.setattr(paths, "MAX_TAIL_EVENTS", max_tail_events)
    date_range = DateRange(start=timezone.localdate(now) - timedelta(days=49),
                           end=timezone.localdate(now))

    def both_ways():
        return paths.paths(date_range=date_range, event_type="view", steps=5)

    with analytics_queries(), sources.raw_events_only():
        raw = both_ways()
    with analytics_queries():
        assert both_ways() == raw
    assert raw["persons"] > 0


@pytest.mark.parametrize("elements_at_first", [1, 2, 3])
def test_paths_from_the_few_elements_next_to_the_anchor_or_from_all_are_exact(
        monkeypatch, elements_at_first):
    """Three views in a row are one step: with one element split off at first, the steps
    need the rest; with more, the elements split off hold them."""
    now = timezone.now()
    shop(random.Random(11), now=now)
    services.roll_up_new_events(now=now + services._lag())
    monkeypatch.setattr(paths._JoinedPathReader, "ELEMENTS_AT_FIRST", elements_at_first)
    date_range = DateRange(start=timezone.localdate(now) - timedelta(days=49),
                           end=timezone.localdate(now))

    def every_path():
        return [paths.paths(date_range=date_range, event_type=anchor, direction=direction,
                            steps=steps)
                for anchor, direction, steps in (
                    (None, "after", 5), ("view", "after", 2), ("add_to_cart", "after", 5),
                    (None, "before", 5), ("purchase", "before", 1), ("view", "before", 5))]

    with analytics_queries(), sources.raw_events_only():
        raw = every_path()
    with analytics_queries():
        assert every_path() == raw
    assert sum(path["persons"] for path in raw) > 0


def test_a_person_whose_alias_was_active_on_other_days_has_the_rolled_up_path():
    now = timezone.now()
    first, second = (timezone.localdate(now - timedelta(days=days)) for days in (3, 2))
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id="sku-1", timestamp=timezone.make_aware(
                                        datetime(day.year, day.month, day.day, 9)))
                         for user, event_type, day in (("anon-1", "view", first),
                                                       ("ann", "purchase", second))],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    link_identities(links=[("anon-1", "ann")], linked_at=now)
    date_range = DateRange(start=first, end=second)

    def ann_path():
        with analytics_queries():
            return paths.paths(date_range=date_range)["paths"]

    assert ann_path() == [{"events": ["view", "purchase"], "persons": 1}]
    # Changed behind the events' back: only a reader of the rolled-up paths sees it.
    UserDayActivity.objects.filter(day=first).update(path='["click"]')
    assert ann_path() == [{"events": ["click", "purchase"], "persons": 1}]


def test_the_rollups_hold_the_events_before_the_watermark_and_nothing_else():
    now = timezone.now()
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="ann",
                                    item_id="sku-1", timestamp=now - timedelta(days=2))],
                 received_at=now - timedelta(hours=1))
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="bob",
                                    item_id="sku-1", timestamp=now - timedelta(days=2))],
                 received_at=now)

    services.roll_up_new_events(now=now)  # the watermark stops the lag short of now

    assert list(UserDayRollup.objects.values_list("user__user_id", flat=True)) == ["ann"]
    assert DailyEventRollup.objects.get().events == 1
    with analytics_queries():
        day = timezone.localdate(now - timedelta(days=2))
        result = overview.overview(date_range=DateRange(start=day, end=day))
    assert result["active_users"] == 2  # bob from the raw tail


def test_unique_persons_of_standard_types_are_counted_over_the_rollups():
    now = timezone.now()
    day = timezone.localdate(now - timedelta(days=2))
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id="sku-1", timestamp=now - timedelta(days=2))
                         for user, event_type in (("ann", "view"), ("bob", "view"),
                                                  ("bob", "purchase"), ("cy", "click"))],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    # Gone from the log behind the rollups' back: only a count over the rollups sees them.
    Event.objects.filter(user__user_id="ann").delete()

    with analytics_queries():
        result = trends.trends(date_range=DateRange(start=day, end=day),
                               event_types=["view", "purchase"], measure="users")
    assert [(row["event_type"], row["total"]) for row in result["series"]] == [
        ("view", 2), ("purchase", 1)]


def test_a_funnels_first_step_is_counted_over_the_rollups():
    now = timezone.now()
    day = timezone.localdate(now - timedelta(days=2))
    noon = timezone.make_aware(datetime(day.year, day.month, day.day, 12))
    upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id="sku-1", timestamp=noon + timedelta(minutes=minutes))
                         for user, event_type, minutes in (("ann", "view", 0), ("bob", "view", 0),
                                                           ("bob", "purchase", 20))],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    # Gone from the log behind the rollups' back: only the rollups still count ann's view.
    Event.objects.filter(user__user_id="ann").delete()

    def funnel(category=None):
        return funnels.funnel(date_range=DateRange(start=day, end=day),
                              steps=["view", "purchase"], category=category)

    with analytics_queries():
        result, in_books = funnel(), funnel("books")
    assert [step["users"] for step in result["steps"]] == [2, 1]
    assert [step["users"] for step in in_books["steps"]] == [2, 1]
    assert [step["users"] for step in result["breakdown"][0]["steps"]] == [2, 1]


def test_a_funnels_first_step_is_a_persons_earliest_even_after_their_first_day_in_the_range():
    now = timezone.now()
    first_day = timezone.localdate(now - timedelta(days=3))
    noon = timezone.make_aware(datetime(first_day.year, first_day.month, first_day.day, 12))
    next_noon = noon + timedelta(days=1)
    upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
    # ann's first day in the range has no view (her first step comes the day after); bob
    # views on both days, and his purchase is within a day of the second view only. Both
    # were active before the range, so their first rows in it link to an earlier day.
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id="sku-1", timestamp=at)
                         for user, event_type, at in (
                             ("ann", "view", noon - timedelta(days=2)),
                             ("bob", "click", noon - timedelta(days=2)),
                             ("ann", "click", noon), ("ann", "view", next_noon),
                             ("ann", "purchase", next_noon + timedelta(minutes=10)),
                             ("bob", "view", noon), ("bob", "view", next_noon),
                             ("bob", "purchase", next_noon + timedelta(minutes=5)))],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    date_range = DateRange(start=first_day, end=first_day + timedelta(days=1))

    def users_per_step():
        with analytics_queries():
            result = funnels.funnel(date_range=date_range, steps=["view", "purchase"],
                                    window_days=1, breakdown=None)
        return [step["users"] for step in result["steps"]]

    assert users_per_step() == [2, 1]
    # Gone from the log behind the rollups' back: the first step is still read from them
    # (the raw events would have no one at it).
    Event.objects.filter(type="view").delete()
    assert users_per_step() == [2, 1]


def test_a_funnel_step_whose_type_also_came_before_the_previous_step_that_day_is_exact():
    now = timezone.now()
    day = timezone.localdate(now - timedelta(days=2))
    nine = timezone.make_aware(datetime(day.year, day.month, day.day, 9))
    upsert_items(items=[{"item_id": "sku-1", "category": "books"},
                        {"item_id": "sku-2", "category": "toys"}])
    timeline = (
        # ann: carts before and after her view; the later one is her step.
        ("ann", "add_to_cart", "sku-1", 0), ("ann", "view", "sku-1", 60),
        ("ann", "add_to_cart", "sku-1", 120), ("ann", "purchase", "sku-1", 150),
        # bob: a cart before his view only, and a click after it.
        ("bob", "add_to_cart", "sku-1", 0), ("bob", "view", "sku-1", 60),
        ("bob", "click", "sku-1", 120),
        # cy: after his view of a book, a cart of a toy only.
        ("cy", "add_to_cart", "sku-1", 0), ("cy", "view", "sku-1", 60),
        ("cy", "add_to_cart", "sku-2", 120),
    )
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id=item, timestamp=nine + timedelta(minutes=minutes))
                         for user, event_type, item, minutes in timeline],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)

    def funnel(category=None):
        return funnels.funnel(date_range=DateRange(start=day, end=day),
                              steps=["view", "add_to_cart", "purchase"], window_days=1,
                              category=category)

    with analytics_queries():
        assert sources.rollup_watermark() is not None
        rolled, in_books = funnel(), funnel("books")
        with sources.raw_events_only():
            assert (funnel(), funnel("books")) == (rolled, in_books)
    assert [(step["users"], step["median_seconds_from_previous"])
            for step in rolled["steps"]] == [(3, None), (2, 3600.0), (1, 1800.0)]
    assert [(row["category"], [step["users"] for step in row["steps"]])
            for row in rolled["breakdown"]] == [("books", [3, 1, 1])]
    assert [step["users"] for step in in_books["steps"]] == [3, 1, 1]


def test_a_persons_path_is_joined_from_their_rolled_up_days():
    now = timezone.now()
    first, second = (timezone.localdate(now - timedelta(days=days)) for days in (3, 2))
    upsert_items(items=[{"item_id": "sku-1", "category": "books"}])

    def at(day, hour):
        return timezone.make_aware(datetime(day.year, day.month, day.day, hour))

    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id="ann",
                                    item_id="sku-1", timestamp=when)
                         for event_type, when in (("view", at(first, 9)),
                                                  ("add_to_cart", at(first, 10)),
                                                  ("add_to_cart", at(second, 9)),
                                                  ("purchase", at(second, 10)))],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    date_range = DateRange(start=first, end=second)

    def ann_path(category=None):
        with analytics_queries():
            return paths.paths(date_range=date_range, category=category)["paths"]

    # The add to cart that ends one day and starts the next is one step.
    assert ann_path() == ann_path("books") == [
        {"events": ["view", "add_to_cart", "purchase"], "persons": 1}]
    # Changed behind the events' back: only a reader of the rolled-up paths sees it.
    UserDayActivity.objects.filter(day=second).update(path='["add_to_cart", "click"]')
    UserDayRollup.objects.filter(day=second).update(path='["refund"]')
    assert ann_path() == [{"events": ["view", "add_to_cart", "click"], "persons": 1}]
    assert ann_path("books") == [{"events": ["view", "add_to_cart", "refund"], "persons": 1}]
    # A stale day (a late event arrived inside it) sends the person to their raw events.
    UserDayActivity.objects.filter(day=second).update(path=None)
    assert ann_path() == [{"events": ["view", "add_to_cart", "purchase"], "persons": 1}]


def test_an_alias_and_its_person_active_on_one_day_have_their_events_interleaved():
    now = timezone.now()
    day = timezone.localdate(now - timedelta(days=2))
    nine = timezone.make_aware(datetime(day.year, day.month, day.day, 9))
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=event_type, user_id=user,
                                    item_id="sku-1", timestamp=nine + timedelta(minutes=minutes))
                         for user, event_type, minutes in (("anon-1", "view", 0),
                                                           ("ann", "add_to_cart", 5),
                                                           ("anon-1", "purchase", 10))],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    link_identities(links=[("anon-1", "ann")], linked_at=now)  # rolled up as two users' days

    with analytics_queries():
        result = paths.paths(date_range=DateRange(start=day, end=day))
    assert result["paths"] == [{"events": ["view", "add_to_cart", "purchase"], "persons": 1}]


def test_an_alias_and_its_person_active_on_one_day_are_one_person_active_one_day():
    now = timezone.now()
    day = timezone.localdate(now - timedelta(days=2))
    nine = timezone.make_aware(datetime(day.year, day.month, day.day, 9))
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id=user,
                                    item_id="sku-1", timestamp=nine + timedelta(minutes=minutes))
                         for user, minutes in (("anon-1", 0), ("ann", 5))],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    link_identities(links=[("anon-1", "ann")], linked_at=now)  # rolled up as two users' days

    with analytics_queries():
        result = stickiness.stickiness(date_range=DateRange(start=day, end=day))
    assert result["person_periods"] == 1
    assert result["days"][0]["persons"] == 1


def test_event_types_with_quotes_separators_and_accents_keep_their_names_in_paths():
    now = timezone.now()
    first, second = (timezone.localdate(now - timedelta(days=days)) for days in (3, 2))
    days_of = {
        "ann": (['said "wow"', "view"], ['said "wow"', 'a","b', "back\\slash", "view"]),
        "bob": (["x],[y", "a b"], ["café", "x],[y", "view", "view", "[]"]),
        "cy": (["a", "],[", "b"], ["view"]),
        # A day of "],[" alone reads like the arrays' join before the real one.
        "dee": (["],["], ["a"]),
    }
    store_events(events=[EventInput(event_id=uuid.uuid4(), type=name, user_id=user,
                                    item_id=None, timestamp=timezone.make_aware(
                                        datetime(day.year, day.month, day.day, 9, position)))
                         for user, names_by_day in days_of.items()
                         for day, names in zip((first, second), names_by_day)
                         for position, name in enumerate(names)],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    date_range = DateRange(start=first, end=second)

    def found_paths():
        with analytics_queries():
            return paths.paths(date_range=date_range, steps=5)["paths"]

    from_rollups = found_paths()
    with sources.raw_events_only():
        assert found_paths() == from_rollups
    assert sorted(path["events"] for path in from_rollups) == [
        ["],[", "a"],
        ["a", "],[", "b", "view"],
        ['said "wow"', "view", 'said "wow"', 'a","b', "back\\slash", "view"],
        ["x],[y", "a b", "café", "x],[y", "view", "[]"]]


def test_a_category_named_like_the_other_series_shares_it_from_the_rollups_too():
    now = timezone.now()
    # "other" has most views, so it is kept; c0 has fewest, the eleventh category, and
    # folds into the series "other" too: ann, who viewed both, is one person there.
    views = {"other": 20, **{f"c{n}": 2 + n for n in range(10)}}
    upsert_items(items=[{"item_id": f"sku-{name}", "category": name} for name in views])
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view",
                                    user_id="ann" if n == 0 and name in ("other", "c0")
                                    else f"{name}-{n}",
                                    item_id=f"sku-{name}", timestamp=now - timedelta(days=1))
                         for name, count in views.items() for n in range(count)],
                 received_at=now - timedelta(hours=1))
    services.roll_up_new_events(now=now)
    day = timezone.localdate(now - timedelta(days=1))

    def persons_by_category():
        return trends.trends(date_range=DateRange(start=day, end=day), event_types=["view"],
                             measure="users", breakdown="category")["series"]

    with analytics_queries(), sources.raw_events_only():
        raw = persons_by_category()
    with analytics_queries():
        rolled = persons_by_category()
    assert {row["breakdown_value"]: row["total"] for row in raw}["other"] == 20 + 2 - 1
    assert rolled == raw


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's planner settings")
def test_a_query_grouped_by_sorting_or_joined_by_hashing_leaves_the_next_reads_free():
    with analytics_queries():
        assert sources.fetch("SHOW enable_hashagg", [], sorted_groups=True) == [("off",)]
        assert sources.fetch("SHOW enable_hashagg", []) == [("on",)]
        assert sources.fetch("SHOW enable_mergejoin", [], hashed_joins=True) == [("off",)]
        assert sources.fetch("SHOW enable_mergejoin", []) == [("on",)]


@override_settings(ANALYTICS_ROLLUP_PROPERTIES=["plan"])
def test_a_rolled_up_propertys_breakdown_and_filter_add_up_its_days_instead_of_events():
    now = timezone.now()
    upsert_items(items=[{"item_id": "sku-1", "category": "books"}])
    store_events(events=[EventInput(event_id=uuid.uuid4(), type="view", user_id="u1",
                                    item_id="sku-1", timestamp=now - timedelta(days=1),
                                    properties={"plan": "pro"})],
                 received_at=now - timedelta(days=1))
    services.roll_up_new_events(now=now)
    # Behind the rollups' back, so which of the two a breakdown read shows.
    Event.objects.update(properties={"plan": "free"})
    date_range = DateRange(start=timezone.localdate(now) - timedelta(days=6),
                           end=timezone.localdate(now))

    def plans(category=None):
        with analytics_queries():
            result = trends.trends(date_range=date_range, event_types=["view"],
                                   breakdown="plan", category=category)
        return [(row["breakdown_value"], row["total"]) for row in result["series"]]

    def views_of(plan, category=None):
        with analytics_queries():
            return trends.trends(date_range=date_range, event_types=["view"],
                                 property_filter=("plan", plan),
                                 category=category)["series"][0]["total"]

    def categories_viewed_on(plan):
        with analytics_queries():
            result = trends.trends(date_range=date_range, event_types=["view"],
                                   property_filter=("plan", plan), breakdown="category")
        return [(row["breakdown_value"], row["total"]) for row in result["series"]]

    assert plans() == [("pro", 1)]
    assert (views_of("pro"), views_of("free")) == (1, 0)
    # The rows carry the item's category, so a category filter reads them too, and so
    # does a filter broken down by category.
    assert plans(category="books") == [("pro", 1)]
    assert views_of("pro", category="books") == 1
    assert views_of("pro", category="toys") == 0
    assert categories_viewed_on("pro") == [("books", 1)]
    assert categories_viewed_on("free") == []
    # Unique persons are not in the rows: counted over the events.
    with analytics_queries():
        persons = trends.trends(date_range=date_range, event_types=["view"], measure="users",
                                breakdown="plan")
    assert [row["breakdown_value"] for row in persons["series"]] == ["free"]
