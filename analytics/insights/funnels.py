"""Funnels: how many persons reach each of a sequence of steps within a conversion window.

A funnel is not summable over days (the window runs across them, from each person's own
first step), so only its first step is rolled up: each person's first event of a standard
type in the range is the earliest of their days' first occurrences (analytics/models.py
FirstOccurrences, plus the raw tail). At 10M events over 120 days that is 0.8M user-days to
read instead of 4.3M view events, and the first step was three fifths of the funnel's time:
3.7 s -> 1.9 s on one database (benchmarks/README.md, session 17). Over every category, most
persons' first step is read off their first user-day in the range (found by its link to the
day before) with no grouping by person (sources.first_occurrences_split). The later steps
join the persons who reached the previous step to their events of the step's type through
the (type, timestamp) index, bounded by the range and the window: reading them from the
user-days' first occurrences too (a day's first event of the type where it comes after the
previous step, that day's events otherwise), joined or as window aggregates, was exact and
no faster, since a step's type has about as many user-days as events and the index-only scan
reads less (benchmarks/README.md, session 25). Partitioning the events by month was not
chosen: a 120-day range spans five of the benchmark's six months, so pruning would leave
most of the scan. Until the updates after an item's category change have rebuilt its days, a
breakdown's first step counts the item's rolled-up events under its old category (as every
rolled-up category figure does, sources.py) while the later steps join its current one."""

from collections import defaultdict
from datetime import timedelta
from typing import Any, Literal

from django.db import connection

from analytics.insights import sources
from analytics.insights.common import DateRange, ratio
from ingestion.models import Event, IdentityLink, Item


def _sql_add_days(column: str) -> str:
    """SQL for `column + N days` with N as the next query parameter."""
    if connection.vendor == "postgresql":
        return f"({column} + %s * INTERVAL '1 day')"
    # SQLite stores datetimes as 'YYYY-MM-DD HH:MM:SS[.ffffff]' text; this keeps that shape
    # so comparisons with stored values stay text comparisons in time order.
    return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {column}, %s)"


def _days_param(days: int) -> Any:
    return days if connection.vendor == "postgresql" else f"+{days} days"


def _sql_seconds_between(earlier: str, later: str) -> str:
    if connection.vendor == "postgresql":
        return f"EXTRACT(EPOCH FROM ({later} - {earlier}))"
    return f"((julianday({later}) - julianday({earlier})) * 86400.0)"


def _funnel_rows(*, date_range: DateRange, steps: list[str], window_days: int,
                 category: str | None, by_category: bool,
                 categories_limit: int | None = None) -> list[tuple]:
    """One query: for each (category, step) the users who reached the step and the median
    seconds from the previous step; with by_category and ``categories_limit``, only for the
    categories with most users at step 1 (ties by name), the ones a breakdown shows: the
    later steps then join only their users.

    Step 1 is each user's first event of that type in the range (from the rollups where
    they are built and the type has a bit in TYPE_BITS). Step k is the user's
    earliest event of type k after their step k-1 time (or at it, for a type other than
    step k-1's) and no later than the first step time + window_days. With by_category
    every step must happen on an item of the same category, and a user can count in
    several categories."""
    event_table = connection.ops.quote_name(Event._meta.db_table)
    item_table = connection.ops.quote_name(Item._meta.db_table)
    link_table = connection.ops.quote_name(IdentityLink._meta.db_table)
    # Steps are counted per person: a linked anonymous id's events are its person's (a
    # product viewed before signing in and bought after is one user's funnel). The link
    # table is small, so each event costs one hash probe, not a join through the users.
    link_join = f"LEFT JOIN {link_table} l ON l.alias_id = e.user_id"
    person = "COALESCE(l.person_id, e.user_id)"
    join_items = by_category or bool(category)
    own_firsts = None if join_items else sources.first_occurrences_split(
        date_range=date_range, event_type=steps[0])
    first_events = sources.first_occurrences(
        date_range=date_range, event_type=steps[0], category=category,
        by_category=by_category) if join_items else None
    if own_firsts is not None:
        (own_sql, own_params), (others_sql, others_params) = own_firsts
        firsts = (f"SELECT person AS user_id, '' AS category, first_at AS reached_at "
                  f"FROM ({own_sql}) AS own_firsts UNION ALL "
                  f"SELECT person, '', MIN(first_at) FROM ({others_sql}) AS first_events "
                  "GROUP BY person")
        first_params = [*own_params, *others_params]
    elif first_events is not None:
        firsts_sql, first_params = first_events
        category_column = "category" if by_category else "''"
        firsts = (f"SELECT person AS user_id, {category_column} AS category, "
                  f"MIN(first_at) AS reached_at FROM ({firsts_sql}) AS first_events "
                  f"GROUP BY person{', category' if by_category else ''}")
    else:
        first_filters = ["e.type = %s", "e.timestamp >= %s", "e.timestamp < %s"]
        first_params = [steps[0], connection.ops.adapt_datetimefield_value(date_range.start_at),
                        connection.ops.adapt_datetimefield_value(date_range.end_before)]
        if category:
            first_filters.append("i.category = %s")
            first_params.append(category)
        category_column = "i.category" if by_category else "''"
        first_group_by = f"{person}, i.category" if by_category else person
        item_join = f"JOIN {item_table} i ON i.id = e.item_id" if join_items else ""
        firsts = (f"SELECT {person} AS user_id, {category_column} AS category, "
                  f"MIN(e.timestamp) AS reached_at FROM {event_table} e {link_join} {item_join} "
                  f"WHERE {' AND '.join(first_filters)} GROUP BY {first_group_by}")
    params: list[Any] = list(first_params)
    ctes = [f"firsts AS ({firsts})"]
    kept_categories = ""
    if by_category and categories_limit is not None:
        # Names in code point order, as Python sorts them in funnel().
        in_code_point_order = ' COLLATE "C"' if connection.vendor == "postgresql" else ""
        ctes.append(f"kept AS (SELECT category FROM firsts GROUP BY category ORDER BY "
                    f"COUNT(*) DESC, category{in_code_point_order} LIMIT %s)")
        params.append(categories_limit)
        kept_categories = " WHERE category IN (SELECT category FROM kept)"
    ctes.append(f"step0 AS (SELECT user_id, category, reached_at, "
                f"{_sql_add_days('reached_at')} AS deadline FROM firsts{kept_categories})")
    params.append(_days_param(window_days))
    # Bounds the later steps' scan to the (type, timestamp) index range they can fall in.
    latest_possible = date_range.end_before + timedelta(days=window_days)
    for index, step in enumerate(steps[1:], start=1):
        # An event at the very time of the previous step follows it unless its type is an
        # earlier step's (an event is no step after itself: in view,cart,view the view of
        # step 1 is no step 3): carts and purchases imported with second- or day-precision
        # times often share one.
        after = ">" if step in steps[:index] else ">="
        same_category = ""
        if join_items:
            same_category = (f"JOIN {item_table} i ON i.id = e.item_id AND "
                             + ("i.category = p.category" if by_category else "i.category = %s"))
        # Each row keeps its seconds from the previous step, which the medians read,
        # instead of joining every step back to the one before it.
        ctes.append(
            f"step{index} AS (SELECT p.user_id, p.category, MIN(e.timestamp) AS reached_at, "
            f"p.deadline, {_sql_seconds_between('p.reached_at', 'MIN(e.timestamp)')} AS seconds "
            f"FROM step{index - 1} p JOIN ({event_table} e {link_join}) "
            f"ON {person} = p.user_id "
            f"AND e.type = %s AND e.timestamp {after} p.reached_at AND e.timestamp <= p.deadline "
            f"AND e.timestamp >= %s AND e.timestamp < %s "
            f"{same_category} GROUP BY p.user_id, p.category, p.deadline, p.reached_at)")
        params += [step, connection.ops.adapt_datetimefield_value(date_range.start_at),
                   connection.ops.adapt_datetimefield_value(latest_possible)]
        if join_items and not by_category:
            params.append(category)

    counts = [f"SELECT 'users' AS metric, {index} AS step, category, COUNT(*) AS amount "
              f"FROM step{index} GROUP BY category" for index in range(len(steps))]
    medians = ""
    if connection.vendor == "postgresql":
        # The mean of the middle two for an even count, as below.
        medians = "".join(
            f" UNION ALL SELECT 'median_seconds', {index}, category, "
            f"percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FROM step{index} "
            "GROUP BY category" for index in range(1, len(steps)))
    elif len(steps) > 1:
        gaps = " UNION ALL ".join(f"SELECT {index} AS step, category, seconds FROM step{index}"
                                  for index in range(1, len(steps)))
        medians = (
            " UNION ALL SELECT 'median_seconds', step, category, AVG(seconds) FROM ("
            "SELECT step, category, seconds, ROW_NUMBER() OVER (PARTITION BY step, category "
            "ORDER BY seconds) AS position, COUNT(*) OVER (PARTITION BY step, category) AS n "
            f"FROM ({gaps}) gaps) ranked "
            "WHERE position IN ((n + 1) / 2, (n + 2) / 2) GROUP BY step, category")
    sql = f"WITH {', '.join(ctes)} {' UNION ALL '.join(counts)}{medians}"
    # Each later step's persons hashed, not sorted with the step's events, where the first
    # step comes from the rollups: at 10M events over 120 days the statement took 0.86-0.93
    # s against 0.97-1.07 s, by category 3.9-4.0 s against 4.4-4.6 s (benchmarks/README.md,
    # session 29). The raw path was not measured, so it keeps the planner's choice.
    rolled_up = own_firsts is not None or first_events is not None
    return sources.fetch(sql, params, hashed_joins=rolled_up)


def _funnel_steps(*, steps: list[str], users: dict[int, int],
                  medians: dict[int, float]) -> list[dict[str, Any]]:
    first = users.get(0, 0)
    result = []
    for index, name in enumerate(steps):
        reached = users.get(index, 0)
        previous = users.get(index - 1, 0) if index else reached
        median = medians.get(index)
        result.append({
            "name": name,
            "users": reached,
            "conversion": ratio(reached, previous) if index else (1.0 if reached else None),
            "overall_conversion": ratio(reached, first),
            "median_seconds_from_previous": round(median, 1) if median is not None else None,
        })
    return result


def funnel(*, date_range: DateRange, steps: list[str], window_days: int = 7,
           category: str | None = None, breakdown: Literal["category"] | None = "category",
           breakdown_limit: int = 20) -> dict[str, Any]:
    """Users per ordered step with step conversion (from the previous step), overall
    conversion (from the first step) and the median time between consecutive steps; plus,
    with breakdown="category", the same funnel per item category (the largest
    `breakdown_limit` categories by step 1, the only ones whose later steps it computes).
    The breakdown is a second pass over the events and costs more than the funnel itself;
    without it `breakdown` is empty."""
    totals: dict[int, int] = {}
    total_medians: dict[int, float] = {}
    for metric, step, _, amount in _funnel_rows(date_range=date_range, steps=steps,
                                                window_days=window_days, category=category,
                                                by_category=False):
        if metric == "users":
            totals[int(step)] = int(amount)
        else:
            total_medians[int(step)] = float(amount)

    category_users: dict[str, dict[int, int]] = defaultdict(dict)
    category_medians: dict[str, dict[int, float]] = defaultdict(dict)
    category_rows = _funnel_rows(date_range=date_range, steps=steps, window_days=window_days,
                                 category=category, by_category=True,
                                 categories_limit=breakdown_limit) if breakdown else []
    for metric, step, category_name, amount in category_rows:
        if metric == "users":
            category_users[category_name][int(step)] = int(amount)
        else:
            category_medians[category_name][int(step)] = float(amount)
    largest = sorted(category_users, key=lambda name: (-category_users[name].get(0, 0), name))
    breakdown = [
        {"category": name,
         "steps": _funnel_steps(steps=steps, users=category_users[name],
                                medians=category_medians[name])}
        for name in largest[:breakdown_limit]
    ]
    step_rows = _funnel_steps(steps=steps, users=totals, medians=total_medians)
    return {
        "steps": step_rows,
        "window_days": window_days,
        "overall_conversion": step_rows[-1]["overall_conversion"],
        "breakdown": breakdown,
    }
