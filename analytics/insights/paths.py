"""Paths: what persons do after (or before) an event, step by step, up to five steps deep.

A person's path is their events in the range in time order with repeats of the same type
in a row folded into one step (five views in a row are one `view` step), as a product
manager reads "what happens after add_to_cart" by kinds of action, not by clicks. Looking
after an event type, the path starts at the person's first event of it in the range;
looking before, it ends at their last one. Without an event type it starts at the person's
first event in the range (or ends at their last).

Where the rollups are built, each person's path is their user-days' rolled-up paths
(analytics.models.DayPath) joined in day order (by the database, on PostgreSQL) and folded
in Python from the anchor on: at 10M events over 120 days, 0.8M user-days read in order
instead of 6.7M events sorted per person (benchmarks/README.md, sessions 19 and 24). The
persons whose days the rollups cannot give whole (events in the raw tail, a stale day, an
alias and its person active on one day) are read from their raw events, as every person
is without rollups: there the database folds repeats and numbers the steps with window
functions, pivots each person's steps into one row and counts persons per distinct path.
Python shapes the (small) list of distinct paths into Sankey nodes and links.
"""

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from itertools import chain, groupby, islice
from operator import itemgetter
from typing import Any, Literal

from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.db.models import QuerySet

from analytics.insights import sources
from analytics.insights.common import DateRange, events_in_range
from ingestion.models import Event, IdentityLink
from ingestion.selectors import person_key


MAX_STEPS = 5
DEFAULT_STEPS = 3
# Event types shown per step; the rest of a step's persons are one node "other", so a
# shop with many custom events still gets a readable chart.
EVENTS_PER_STEP = 8
TOP_PATHS = 20
OTHER = "other"

# Users (persons and their aliases) whose raw events one query reads: a bound on its
# parameters (SQLite allows 32,766).
RAW_USERS_PER_QUERY = 5_000
# With more events than this in the raw tail (rollups started over, or far behind), one
# pass over the range's raw events costs less than the rollups plus a query per few
# thousand persons.
MAX_TAIL_EVENTS = 100_000
ROWS_PER_FETCH = 10_000

Direction = Literal["after", "before"]
Path = tuple[str | None, ...]


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
             for (step, name), persons in sorted(
                 persons_at.items(),
                 key=lambda kv: (kv[0][0], kv[0][1] == OTHER, -kv[1], kv[0][1]))]
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
                      steps: int, category: str | None) -> dict[Path, int]:
    """{(step 0 type, step 1 type or None, ...): persons}."""
    events = events_in_range(date_range=date_range, category=category)
    rolled = sources.day_paths(date_range=date_range, category=category)
    if rolled is None:
        return _counted_from_events(events, anchor=anchor, direction=direction, steps=steps)
    (rolled_sql, rolled_params), tail = rolled
    if tail.values("id")[:MAX_TAIL_EVENTS + 1].count() > MAX_TAIL_EVENTS:
        return _counted_from_events(events, anchor=anchor, direction=direction, steps=steps)
    from_events = set(tail.annotate(person=person_key())
                      .values_list("person", flat=True).distinct())
    counted: Counter[Path] = Counter()
    read = _JoinedPathReader(anchor=anchor, direction=direction, steps=steps)
    for person, days, joined in _joined_day_paths(rolled_sql, rolled_params):
        path = (read(joined, days) if joined is not None and person not in from_events
                else _UNREAD)
        if path is _UNREAD:
            from_events.add(person)
        elif path is not None:
            counted[path] += 1
    for users in _users_of(sorted(from_events)):
        counted.update(_counted_from_events(events.filter(user_id__in=users), anchor=anchor,
                                            direction=direction, steps=steps))
    return dict(counted)


def _joined_day_paths(rolled_sql: str, rolled_params: list[Any]
                      ) -> Iterator[tuple[int, int, str | None]]:
    """Per person of the rolled-up days (person, day, path, user_id), how many days, and
    their paths (JSON arrays) in day order joined by commas; None where a day is stale or
    the person has two rows on a day (an alias's and its person's, whose events
    interleave). PostgreSQL joins a person's days as it groups them, so 0.19M rows cross
    the wire instead of 0.8M at 10M events over 120 days (benchmarks/README.md, session
    24). The days come in order from a sorted subquery that string_agg reads directly (no
    join or parallel step between them), which PostgreSQL's documentation of aggregates
    says usually works rather than promises; the exactness tests compare the paths with
    raw events' on PostgreSQL. Ordering string_agg's own input instead sorts each
    person's days once more (2.2 s instead of 1.3 s there), and cutting off each array's
    brackets in the statement cost 0.5 s more than in Python. A person with rows of
    several users (linked aliases) is read day by day and checked in Python, as everyone
    is on SQLite (which before 3.44 cannot order an aggregate's input)."""
    with connection.cursor() as cursor:
        if connection.vendor != "postgresql":
            yield from _joined_in_python(cursor, rolled_sql, rolled_params)
            return
        cursor.execute(
            "SELECT person, MIN(user_id) = MAX(user_id), COUNT(*), CASE WHEN COUNT(path) "
            "= COUNT(*) THEN string_agg(path, ',') END FROM (SELECT * "
            f"FROM ({rolled_sql}) AS rolled ORDER BY person, day) AS days GROUP BY person",
            rolled_params)
        linked = []
        # Fetched in chunks: the driver builds a chunk's rows at once, where iterating the
        # cursor builds them one by one.
        for person, one_user, days, joined in chain.from_iterable(
                iter(lambda: cursor.fetchmany(ROWS_PER_FETCH), [])):
            if one_user:
                yield person, days, joined
            else:
                linked.append(person)
        if linked:
            yield from _joined_in_python(
                cursor, f"SELECT * FROM ({rolled_sql}) AS rolled WHERE person = ANY(%s)",
                [*rolled_params, linked])


def _joined_in_python(cursor: CursorWrapper, rolled_sql: str, rolled_params: list[Any]
                      ) -> Iterator[tuple[int, int, str | None]]:
    """_joined_day_paths's rows, joined from the days read in order."""
    cursor.execute(f"SELECT person, day, path FROM ({rolled_sql}) AS rolled "
                   "ORDER BY person, day", rolled_params)
    rows = chain.from_iterable(iter(lambda: cursor.fetchmany(ROWS_PER_FETCH), []))
    for person, person_rows in groupby(rows, key=itemgetter(0)):
        days = [(day, path) for _, day, path in person_rows]
        whole = None not in (path for _, path in days) and \
            len({day for day, _ in days}) == len(days)
        yield person, len(days), ",".join(path for _, path in days) if whole else None


# What _JoinedPathReader returns for a person whose joined paths do not read as JSON
# strings: they are read from raw events instead.
_UNREAD: Any = object()


class _JoinedPathReader:
    """A person's path (as _steps gives it) from _joined_day_paths's text. The writers
    store an array compactly and escape a quote with a backslash. So where there is no
    backslash and, once the arrays' brackets are cut (the outer ones and each '"],["'
    between arrays), every quote inside is one of a '","' separator's, the elements are
    exactly the text between separators, and the anchor's element is the text
    '"anchor"'. Then only the elements next to the anchor are split off: at 10M events
    over 120 days a person's days hold 30 elements on average (up to thousands), of which
    a path takes six. Anything else (an array written another way, an escaped character)
    is parsed whole."""

    # Elements split off at first: enough for the steps unless the same type repeats
    # across many updates or days.
    ELEMENTS_AT_FIRST = 32

    def __init__(self, *, anchor: str | None, direction: Direction, steps: int):
        self.anchor, self.direction, self.steps = anchor, direction, steps
        # An anchor with a comma could match across elements ('","' every separator).
        self.quoted_anchor = None if anchor is None else f'"{anchor}"'
        self.findable = anchor is None or not any(char in anchor for char in '"\\,')

    def __call__(self, arrays: str, days: int) -> Path | None:
        if (not self.findable or "\\" in arrays or arrays[:2] != '["' or arrays[-2:] != '"]'
                or arrays.count('"],["') != days - 1):
            return self._parsed(arrays)
        joined = arrays[1:-1].replace('"],["', '","') if days > 1 else arrays[1:-1]
        # An element such as "],[" or '","' leaves some quote inside outside a separator.
        if joined.count('"', 1, -1) != 2 * joined.count('","', 1, -1):
            return self._parsed(arrays)
        after = self.direction == "after"
        if self.quoted_anchor is None:
            segment = joined[1:-1]
        else:
            # The text from the anchor's element on (after), or up to it (before).
            at = joined.find(self.quoted_anchor) if after else joined.rfind(self.quoted_anchor)
            if at < 0:
                return None
            segment = joined[at + 1:-1] if after else joined[1:at + len(self.quoted_anchor) - 1]
        elements = (segment.split('","', self.ELEMENTS_AT_FIRST) if after
                    else segment.rsplit('","', self.ELEMENTS_AT_FIRST)[::-1])
        if len(elements) > self.ELEMENTS_AT_FIRST:
            # The last element holds the rest unsplit: the steps come from the others if
            # they hold enough, else from every element.
            path = _folded(elements[:-1], self.steps)
            if path[-1] is not None:
                return path
            elements = segment.split('","') if after else segment.split('","')[::-1]
        return _folded(elements, self.steps)

    def _parsed(self, arrays: str) -> Path | None:
        try:
            days = json.loads(f"[{arrays}]")
        except ValueError:
            return _UNREAD
        if not all(isinstance(day, list) for day in days):
            return _UNREAD
        event_types = [event_type for day in days for event_type in day]
        if not all(isinstance(event_type, str) for event_type in event_types):
            return _UNREAD
        return _steps(event_types, anchor=self.anchor, direction=self.direction,
                      steps=self.steps)


def _folded(ordered: Iterable[str], steps: int) -> Path:
    """The first steps + 1 steps of event types in order, repeats in a row folded, padded
    with None."""
    picked = tuple(islice(map(itemgetter(0), groupby(ordered)), steps + 1))
    return picked + (None,) * (steps + 1 - len(picked))


def _users_of(persons: list[int]) -> Iterator[list[int]]:
    """The persons' users (their own and their linked aliases'), a person's all in one
    list of about RAW_USERS_PER_QUERY at most."""
    aliases: defaultdict[int, list[int]] = defaultdict(list)
    for start in range(0, len(persons), RAW_USERS_PER_QUERY):
        for alias, person in IdentityLink.objects.filter(
                person_id__in=persons[start:start + RAW_USERS_PER_QUERY]).values_list(
                "alias_id", "person_id"):
            aliases[person].append(alias)
    users: list[int] = []
    for person in persons:
        users += [person, *aliases[person]]
        if len(users) >= RAW_USERS_PER_QUERY:
            yield users
            users = []
    if users:
        yield users


def _steps(event_types: list[str], *, anchor: str | None, direction: Direction,
           steps: int) -> Path | None:
    """One person's path from their event types in time order (repeats in a row not yet
    folded), as _counted_from_events computes it in the database; None where the anchor's
    type is not among them. Only the steps wanted are folded: a person's first event of a
    type starts its first folded step of it, and their last one ends the last."""
    if direction == "after":
        if anchor is None:
            start = 0
        elif anchor in event_types:
            start = event_types.index(anchor)
        else:
            return None
        ordered: Iterable[str] = islice(event_types, start, None)
    else:
        if anchor is None:
            end = len(event_types)
        elif anchor in event_types:
            end = len(event_types) - event_types[::-1].index(anchor)
        else:
            return None
        ordered = reversed(event_types[:end])
    return _folded(ordered, steps)


def _counted_from_events(events: QuerySet[Event], *, anchor: str | None,
                         direction: Direction, steps: int) -> dict[Path, int]:
    """{path: persons} over the events' persons, counted in the database."""
    events = events.annotate(person=person_key()).values_list("person", "type", "timestamp",
                                                              "id")
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
