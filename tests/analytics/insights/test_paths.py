"""Paths on hand-built journeys with known answers."""

import pytest

from analytics.insights import paths
from tests.analytics.insights.builders import JANUARY, at, event, item, user


pytestmark = pytest.mark.django_db


def journey(name: str, *kinds: str, day: int = 5, thing=None):
    """One person doing `kinds` a minute apart on `day`."""
    who = user(name)
    for minute, kind in enumerate(kinds):
        event(who, kind, at(day, 10, minute), thing)
    return who


def node(result, step, event_type):
    return next(row for row in result["nodes"]
                if (row["step"], row["event_type"]) == (step, event_type))


def test_steps_after_an_event_fold_repeats_and_count_drop_off():
    journey("ann", "view", "add_to_cart", "view", "view", "purchase")
    journey("bob", "add_to_cart", "purchase")
    journey("cid", "add_to_cart")
    journey("dee", "view", "view")  # never adds to cart: not on any path

    result = paths.paths(date_range=JANUARY, event_type="add_to_cart", steps=2)

    assert result["persons"] == 3
    assert node(result, 0, "add_to_cart") == {
        "step": 0, "event_type": "add_to_cart", "persons": 3, "continued": 2, "dropped_off": 1}
    # ann's two views in a row are one step, so her purchase is step 2.
    assert [(row["step"], row["source"], row["target"], row["persons"])
            for row in result["links"]] == [(0, "add_to_cart", "purchase", 1),
                                            (0, "add_to_cart", "view", 1),
                                            (1, "view", "purchase", 1)]
    assert node(result, 1, "purchase")["dropped_off"] == 1
    assert node(result, 2, "purchase")["dropped_off"] is None  # cut here, not ended
    assert result["paths"][0] == {"events": ["add_to_cart"], "persons": 1}


def test_a_path_starts_at_the_first_occurrence_in_the_range():
    who = user("ann")
    event(who, "search", at(2))
    event(who, "signup", at(3))
    event(who, "search", at(4))
    event(who, "purchase", at(5))

    result = paths.paths(date_range=JANUARY, event_type="search", steps=3)

    assert result["paths"] == [{"events": ["search", "signup", "search", "purchase"],
                                "persons": 1}]


def test_looking_back_from_an_event_ends_at_its_last_occurrence():
    journey("ann", "signup", "view", "purchase", "view", "purchase")
    journey("bob", "search", "purchase")

    result = paths.paths(date_range=JANUARY, event_type="purchase", direction="before", steps=2)

    assert result["direction"] == "before"
    assert [(row["step"], row["source"], row["target"], row["persons"])
            for row in result["links"]] == [(0, "purchase", "search", 1),
                                            (0, "purchase", "view", 1),
                                            (1, "view", "purchase", 1)]
    assert {tuple(row["events"]) for row in result["paths"]} == {
        ("purchase", "view", "purchase"), ("purchase", "search")}


def test_ties_are_ordered_by_event_type_and_many_types_fold_into_other():
    for index in range(10):
        journey(f"u{index}", "signup", f"custom_{index:02d}")
    journey("extra", "signup", "custom_05")

    result = paths.paths(date_range=JANUARY, event_type="signup", steps=1)

    step_one = [row for row in result["nodes"] if row["step"] == 1]
    # Most persons first, then ties by name; the two types left over are "other", last.
    assert [row["event_type"] for row in step_one] == [
        "custom_05", "custom_00", "custom_01", "custom_02", "custom_03", "custom_04",
        "custom_06", "custom_07", "other"]
    assert node(result, 1, "other")["persons"] == 2
    # The whole paths keep the real names, "other" is only for the chart.
    assert {"events": ["signup", "custom_09"], "persons": 1} in result["paths"]


def test_without_an_event_paths_start_at_each_persons_first_event_and_honour_the_category():
    shoe, cup = item("shoe", "shoes"), item("cup", "kitchen")
    who = user("ann")
    event(who, "view", at(5, 9), cup)
    event(who, "view", at(5, 10), shoe)
    event(who, "add_to_cart", at(5, 11), shoe)

    everything = paths.paths(date_range=JANUARY, steps=1)
    shoes = paths.paths(date_range=JANUARY, steps=1, category="shoes")

    assert everything["paths"] == [{"events": ["view", "add_to_cart"], "persons": 1}]
    assert shoes["paths"] == [{"events": ["view", "add_to_cart"], "persons": 1}]
    assert paths.paths(date_range=JANUARY, steps=1, category="kitchen")["paths"] == [
        {"events": ["view"], "persons": 1}]


def test_events_outside_the_range_are_not_steps():
    who = user("ann")
    event(who, "add_to_cart", at(31))
    event(who, "purchase", at(1, month=2))

    result = paths.paths(date_range=JANUARY, event_type="add_to_cart", steps=1)

    assert result["paths"] == [{"events": ["add_to_cart"], "persons": 1}]


@pytest.mark.parametrize("arguments", [{"steps": 0}, {"steps": paths.MAX_STEPS + 1}])
def test_impossible_questions_are_refused(arguments):
    with pytest.raises(ValueError):
        paths.paths(date_range=JANUARY, **arguments)
