"""Trends on a hand-built event set whose answers are worked out by hand."""

from datetime import date

import pytest

from analytics.insights import trends
from analytics.insights.common import DateRange
from tests.analytics.insights.builders import at, event, item, user


pytestmark = pytest.mark.django_db

FIRST_WEEK = DateRange(start=date(2026, 1, 5), end=date(2026, 1, 11))  # Monday to Sunday


@pytest.fixture
def searches():
    """Week of 5 Jan: ann searches twice on the 5th (plan pro), bob once on the 6th (plan
    free) and signs up on the 6th; the week before, ann searched once."""
    ann, bob = user("ann"), user("bob")
    event(ann, "search", at(5, 9), properties={"query": "red dress", "plan": "pro"}, value=2.0)
    event(ann, "search", at(5, 10), properties={"query": "boots", "plan": "pro"}, value=4.0)
    event(bob, "search", at(6), properties={"query": "boots", "plan": "free"}, value=6.0)
    event(bob, "signup", at(6), properties={"plan": "free", "utm_source": "ads"})
    event(ann, "search", at(1), properties={"plan": "pro"})


def series(result, event_type, value=None):
    return next(row for row in result["series"]
                if row["event_type"] == event_type and row["breakdown_value"] == value)


def test_counts_unique_users_sums_and_averages_per_day(searches):
    def measured(measure):
        return trends.trends(date_range=FIRST_WEEK, event_types=["search"], measure=measure)

    assert measured("count")["series"][0]["values"] == [2, 1, 0, 0, 0, 0, 0]
    assert measured("users")["series"][0]["values"] == [1, 1, 0, 0, 0, 0, 0]
    # Two distinct persons over the week, not the sum of the days' counts.
    assert measured("users")["series"][0]["total"] == 2
    assert measured("sum")["series"][0]["values"][:2] == [6.0, 6.0]
    assert measured("average")["series"][0]["values"][:2] == [3.0, 6.0]
    assert measured("average")["series"][0]["total"] == 4.0


def test_several_event_types_of_any_name_and_weekly_and_monthly_intervals(searches):
    weekly = trends.trends(date_range=FIRST_WEEK, event_types=["search", "signup"], interval="week")
    assert weekly["periods"] == ["2026-01-05"]
    assert [(row["event_type"], row["values"]) for row in weekly["series"]] == [
        ("search", [3]), ("signup", [1])]

    monthly = trends.trends(date_range=DateRange(start=date(2026, 1, 1), end=date(2026, 2, 3)),
                            event_types=["search"], interval="month")
    assert monthly["periods"] == ["2026-01-01", "2026-02-01"]
    assert monthly["series"][0]["values"] == [4, 0]


def test_filter_and_breakdown_by_a_property(searches):
    # "free" and "pro" tie on 2 events each over both types, so they go alphabetically.
    by_plan = trends.trends(date_range=FIRST_WEEK, event_types=["search", "signup"],
                            interval="week", breakdown="plan")
    assert [(row["event_type"], row["breakdown_value"], row["total"]) for row in by_plan["series"]] == [
        ("search", "free", 1), ("search", "pro", 2), ("signup", "free", 1)]

    boots = trends.trends(date_range=FIRST_WEEK, event_types=["search"],
                          property_filter=("query", "boots"))
    assert boots["series"][0]["total"] == 2


def test_a_property_key_that_looks_like_a_number_is_a_key_not_an_array_index():
    ann, bob = user("ann"), user("bob")
    # An experiment's id as the key, as shops send A/B assignments.
    event(ann, "search", at(5), properties={"2024": "variant-b", "1": True})
    event(bob, "search", at(6), properties={"2024": "control"})

    by_experiment = trends.trends(date_range=FIRST_WEEK, event_types=["search"],
                                  breakdown="2024")
    in_variant = trends.trends(date_range=FIRST_WEEK, event_types=["search"],
                               property_filter=("2024", "variant-b"))
    flagged = trends.trends(date_range=FIRST_WEEK, event_types=["search"],
                            property_filter=("1", "true"))

    assert [(row["breakdown_value"], row["total"]) for row in by_experiment["series"]] == [
        ("control", 1), ("variant-b", 1)]
    assert in_variant["series"][0]["total"] == 1
    assert flagged["series"][0]["total"] == 1


def test_a_property_set_to_null_is_counted_as_none_on_every_database():
    event(user("ann"), "search", at(5), properties={"plan": None})
    event(user("bob"), "search", at(6), properties={"plan": "pro"})

    by_plan = trends.trends(date_range=FIRST_WEEK, event_types=["search"], breakdown="plan")

    assert [(row["breakdown_value"], row["total"]) for row in by_plan["series"]] == [
        ("(none)", 1), ("pro", 1)]


def test_an_unknown_property_key_filters_everything_out_or_breaks_down_into_none(searches):
    filtered = trends.trends(date_range=FIRST_WEEK, event_types=["search"],
                             property_filter=("colour", "red"))
    assert filtered["series"][0]["total"] == 0

    broken_down = trends.trends(date_range=FIRST_WEEK, event_types=["search"], breakdown="colour")
    assert [(row["breakdown_value"], row["total"]) for row in broken_down["series"]] == [("(none)", 3)]


def test_more_than_ten_breakdown_values_keep_the_ten_most_frequent_and_fold_the_rest():
    shopper = user("shopper")
    for query_number in range(12):
        for _ in range(12 - query_number):  # query 0 is the most frequent, query 11 the least
            event(shopper, "search", at(5), properties={"query": f"q{query_number:02d}"})

    result = trends.trends(date_range=FIRST_WEEK, event_types=["search"], breakdown="query")

    values = [row["breakdown_value"] for row in result["series"]]
    assert values == [f"q{n:02d}" for n in range(10)] + ["other"]
    assert series(result, "search", "other")["total"] == 2 + 1  # q10 and q11
    # One shopper behind both folded queries: "other" counts persons once.
    users = trends.trends(date_range=FIRST_WEEK, event_types=["search"], breakdown="query",
                          measure="users")
    assert series(users, "search", "other")["total"] == 1


def test_persons_by_category_keep_the_ten_categories_with_most_events():
    shopper = user("shopper")
    for number in range(10):  # c00 has the most events (13), c09 the fewest kept (4)
        product = item(f"sku-{number}", f"c{number:02d}")
        for _ in range(13 - number):
            event(shopper, "view", at(5), product)
    rarely_viewed = item("sku-rare", "c10")
    for name in ("ann", "bob", "cy"):  # 3 events, but more persons than any other category
        event(user(name), "view", at(6), rarely_viewed)

    result = trends.trends(date_range=FIRST_WEEK, event_types=["view"], breakdown="category",
                           measure="users")

    values = [row["breakdown_value"] for row in result["series"]]
    assert values == [f"c{number:02d}" for number in range(10)] + ["other"]
    assert series(result, "view", "other")["total"] == 3
    assert series(result, "view", "c00")["total"] == 1


def test_breakdown_by_item_category(searches):
    shoes, hats, plain = item("sneaker", "shoes"), item("beanie", "hats"), item("sock", "")
    viewer = user("viewer")
    event(viewer, "view", at(7), shoes)
    event(viewer, "view", at(7), shoes)
    event(viewer, "view", at(8), hats)
    event(viewer, "view", at(8), plain)   # no category and no item: one "(none)" series
    event(viewer, "view", at(9))

    result = trends.trends(date_range=FIRST_WEEK, event_types=["view"], breakdown="category",
                           interval="week")

    assert [(row["breakdown_value"], row["total"]) for row in result["series"]] == [
        ("(none)", 2), ("shoes", 2), ("hats", 1)]


def test_compare_to_the_previous_period(searches):
    result = trends.trends(date_range=FIRST_WEEK, event_types=["search"], interval="week",
                           compare=True)

    row = result["series"][0]
    assert result["previous_periods"] == ["2025-12-29"]
    assert (row["total"], row["previous_total"]) == (3, 1)


def test_compare_by_week_lines_each_week_up_with_the_same_days_weeks_before():
    # Wednesday 7 to Tuesday 13 Jan: two weeks' periods, so the range compared is the same
    # days two weeks before, Wednesday 24 to Tuesday 30 Dec. The days between (31 Dec to 6
    # Jan) are in neither. Filtered by a property, as events are counted where the per-day
    # figures cannot answer.
    ann = user("ann")
    for moment in (at(23, 23, 59, month=12, year=2025), at(24, 0, 0, month=12, year=2025),
                   at(30, 12, month=12, year=2025), at(6, 23, 59), at(7, 0, 0), at(12)):
        event(ann, "search", moment, properties={"plan": "pro"})

    result = trends.trends(date_range=DateRange(start=date(2026, 1, 7), end=date(2026, 1, 13)),
                           event_types=["search"], interval="week", compare=True,
                           property_filter=("plan", "pro"))

    row = result["series"][0]
    assert (result["periods"], result["previous_periods"]) == (
        ["2026-01-05", "2026-01-12"], ["2025-12-22", "2025-12-29"])
    assert (row["values"], row["previous_values"]) == ([1, 1], [1, 1])
    assert (row["total"], row["previous_total"]) == (2, 2)


@pytest.mark.parametrize("start, end, compared_start, compared_end", [
    # A whole February: the whole of January, not its first 28 days.
    (date(2026, 2, 1), date(2026, 2, 28), date(2026, 1, 1), date(2026, 1, 31)),
    # Three months' periods: three months before.
    (date(2026, 1, 15), date(2026, 3, 31), date(2025, 10, 15), date(2025, 12, 31)),
    (date(2026, 3, 31), date(2026, 4, 29), date(2026, 1, 31), date(2026, 2, 28))])
def test_compare_by_month_takes_the_same_days_whole_months_before(start, end, compared_start,
                                                                   compared_end):
    compared = trends.compared_range(DateRange(start=start, end=end), "month")

    assert (compared.start, compared.end) == (compared_start, compared_end)


@pytest.mark.parametrize("measure, folded_before", [("count", 3), ("users", 1), ("sum", 6.0)])
def test_compare_folds_the_period_before_into_the_values_the_current_range_keeps(
        measure, folded_before):
    # This week q00-q10 once each: q00-q09 are kept (ties by name) and q10 is "other". The
    # week before, q10 was searched three times and q00 once: its series are this week's.
    shopper = user("shopper")
    for number in range(11):
        event(shopper, "search", at(5), properties={"query": f"q{number:02d}"}, value=1.0)
    for _ in range(3):
        event(shopper, "search", at(1), properties={"query": "q10"}, value=2.0)
    event(shopper, "search", at(1), properties={"query": "q00"}, value=5.0)

    result = trends.trends(date_range=FIRST_WEEK, event_types=["search"], breakdown="query",
                           measure=measure, interval="week", compare=True)

    assert [row["breakdown_value"] for row in result["series"]] == (
        [f"q{number:02d}" for number in range(10)] + ["other"])
    assert series(result, "search", "other")["previous_total"] == folded_before
    assert series(result, "search", "q00")["previous_total"] == (1 if measure != "sum" else 5.0)
    assert series(result, "search", "q05")["previous_total"] == 0
    assert series(result, "search", "other")["total"] == 1


def test_averages_per_period_and_over_the_range_by_property_and_before(searches):
    event(user("cy"), "search", at(6), properties={"plan": "pro"}, value=9.0)

    result = trends.trends(date_range=FIRST_WEEK, event_types=["search"], breakdown="plan",
                           measure="average", compare=True)

    pro = series(result, "search", "pro")
    # Over the week: (2 + 4 + 9) / 3, not the days' averages averaged (6) or summed (12).
    assert (pro["values"][:2], pro["total"]) == ([3.0, 9.0], 5.0)
    assert series(result, "search", "free")["total"] == 6.0
    # ann's search of 1 Jan has no value: the week before has nothing to average.
    assert (pro["previous_total"], sum(pro["previous_values"])) == (0, 0)


def test_unique_persons_by_a_property_count_a_person_of_two_days_once_over_the_range():
    cy = user("cy")
    event(cy, "search", at(5), properties={"plan": "pro"})
    event(cy, "search", at(7), properties={"plan": "pro"})
    event(user("dee"), "search", at(6), properties={"plan": "pro"})

    result = trends.trends(date_range=FIRST_WEEK, event_types=["search"], breakdown="plan",
                           measure="users", compare=True)

    pro = series(result, "search", "pro")
    # Two persons: not the days' persons summed (3), nor the busiest day's (1).
    assert (pro["values"][:3], pro["total"], pro["previous_total"]) == ([1, 1, 1], 2, 0)
