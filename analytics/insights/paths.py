"""Paths: what persons do after (or before) an event, step by step, up to five steps deep.

A person's path is their events in the range in time order with repeats of the same type
in a row folded into one step (five views in a row are one `view` step), as a product
manager reads "what happens after add_to_cart" by kinds of action, not by clicks. Looking
after an event type, the path starts at the person's first event of it in the range;
looking before, it ends at their last one. Without an event type it starts at the person's
first event in the range (or ends at their last).

The database folds repeats and numbers the steps with window functions, pivots each
person's steps into one row and counts persons per distinct path; Python only shapes the
(small) list of distinct paths into Sankey nodes and links.
"""

from collections import Counter
from typing import Any, Literal

from analytics.insights import sources
from analytics.insights.common import DateRange, events_in_range
from ingestion.selectors import person_key


MAX_STEPS = 5
DEFAULT_STEPS = 3
# Event types shown per step; the rest of a step's persons are one node "other", so a
# shop with many custom events still gets a readable chart.
EVENTS_PER_STEP = 8
TOP_PATHS = 20
OTHER = "other"

Direction = Literal["after", "before"]


def paths(*, date_range: DateRange, event_type: str | None = None,
          direction: Direction = "after", steps: int = DEFAULT_STEPS,
          category: str | None = None) -> dict[str, Any]:
    """Steps 0..`steps` from the anchor: step 0 is `event_type` (or each person's first or
    last event) and step k the k-th step after it, or before it.

    ``nodes``: per step, the event types persons were at, with ``persons``, ``continued``
    (went on to another step) and ``dropped_off`` (had no further step in the range;
    None at the last step shown, where the path is cut, not ended). ``links``: persons
    moving from a node to a node of the next step. ``paths``: the most common whole paths.
    Ties are ordered by event type, so the answer does not depend on storage order."""
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}")
    counted = _persons_per_path(date_range=date_range, anchor=event_type,
                                direction=direction, steps=steps, category=category)
    shown = _shown_events(counted, steps=steps)

    def label(step: int, event_type: str | None) -> str | None:
        if event_type is None:
            return None
        return event_type if event_type in shown[step] else OTHER

    persons_at: Counter[tuple[int, str]] = Counter()
    moved: Counter[tuple[int, str, str]] = Counter()
    whole_paths: Counter[tuple[str, ...]] = Counter()
    for path, persons in counted.items():
        labels = [label(step, event_type) for step, event_type in enumerate(path)]
        reached = [name for name in labels if name is not None]
        whole_paths[tuple(path[:len(reached)])] += persons
        for step, name in enumerate(reached):
            persons_at[(step, name)] += persons
            if step + 1 < len(reached):
                moved[(step, name, reached[step + 1])] += persons

    continued: Counter[tuple[int, str]] = Counter()
    for (step, source, _), persons in moved.items():
        continued[(step, source)] += persons
    nodes = [{"step": step, "event_type": name, "persons": persons,
              "continued": continued[(step, name)],
              "dropped_off": persons - continued[(step, name)] if step < steps else None}
             for (step, name), persons in sorted(persons_at.items(),
                                                 key=lambda kv: (kv[0][0], kv[0][1] == OTHER, -kv[1],
                                                                 kv[0][1]))]
    links = [{"step": step, "source": source, "target": target, "persons": persons}
             for (step, source, target), persons in sorted(
                 moved.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1], kv[0][2]))]
    top = sorted(whole_paths.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_PATHS]
    return {
        "direction": direction,
        "event_type": event_type,
        "steps": steps,
        "persons": sum(counted.values()),
        "nodes": nodes,
        "links": links,
        "paths": [{"events": list(events), "persons": persons} for events, persons in top],
    }


def _persons_per_path(*, date_range: DateRange, anchor: str | None, direction: Direction,
                      steps: int, category: str | None) -> dict[tuple[str | None, ...], int]:
    """{(step 0 type, step 1 type or None, ...): persons}: one aggregated row per distinct
    path, counted in the database."""
    events = (events_in_range(date_range=date_range, category=category)
              .annotate(person=person_key()).values_list("person", "type", "timestamp", "id"))
    events_sql, events_params = events.query.sql_with_params()
    if direction == "after":
        anchor_position, offset = "MIN(position)", "position - anchor"
    else:
        anchor_position, offset = "MAX(position)", "anchor - position"
    anchor_filter = "WHERE event_type = %s" if anchor else ""
    step_columns = ", ".join(f"MAX(CASE WHEN step = {step} THEN event_type END) AS step_{step}"
                             for step in range(steps + 1))
    step_names = ", ".join(f"step_{step}" for step in range(steps + 1))
    sql = f"""
        WITH ranged AS ({events_sql}),
        marked AS (
            SELECT person, "type" AS event_type, "timestamp" AS at, id,
                   LAG("type") OVER (PARTITION BY person ORDER BY "timestamp", id) AS before
            FROM ranged),
        folded AS (
            SELECT person, event_type,
                   ROW_NUMBER() OVER (PARTITION BY person ORDER BY at, id) AS position
            FROM marked WHERE before IS NULL OR before <> event_type),
        anchors AS (
            SELECT person, {anchor_position} AS anchor FROM folded {anchor_filter}
            GROUP BY person),
        placed AS (
            SELECT folded.person, event_type, {offset} AS step
            FROM folded JOIN anchors ON anchors.person = folded.person
            WHERE {offset} BETWEEN 0 AND %s),
        per_person AS (SELECT {step_columns} FROM placed GROUP BY person)
        SELECT {step_names}, COUNT(*) FROM per_person GROUP BY {step_names}
    """
    params = [*events_params, *([anchor] if anchor else []), steps]
    return {tuple(row[:-1]): row[-1] for row in sources.fetch(sql, params)}


def _shown_events(counted: dict[tuple[str | None, ...], int], *,
                  steps: int) -> list[set[str]]:
    """Per step, the EVENTS_PER_STEP event types most persons were at."""
    per_step: list[Counter[str]] = [Counter() for _ in range(steps + 1)]
    for path, persons in counted.items():
        for step, event_type in enumerate(path):
            if event_type is not None:
                per_step[step][event_type] += persons
    return [{name for name, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
             [:EVENTS_PER_STEP]} for counter in per_step]
