"""Maintaining the rollups (analytics/models.py) from the event log.

The invariant every function here keeps: the rollups hold exactly the events received
before ``RollupState.watermark``, each counted once. Readers add the events received since
(analytics/insights/sources.py), so an answer is exact whatever state the rollups are in.

- ``roll_up_new_events`` moves the watermark forward over the events received since, in
  chunks of at most ROLLUP_CHUNK_EVENTS, each chunk one transaction that adds the chunk's
  counts and moves the watermark together. A crash loses the chunk's work and nothing else.
- The watermark stops ROLLUP_LAG_SECONDS short of now, so a batch whose transaction
  commits a few seconds after its received_at was taken is not skipped. On PostgreSQL it
  also stops that far short of the start of the oldest transaction still writing events,
  users or items (``_upper_bound``; store_events stamps received_at when the events'
  transaction begins): a batch held up behind a lock for longer than the lag would
  otherwise commit behind the watermark and never be counted. (On SQLite writers take
  turns, and the stamp is taken once the events' transaction holds the write lock.)
- Every update starts by locking the state row; a second worker waits, then sees the moved
  watermark and adds nothing twice. On PostgreSQL the transaction is REPEATABLE READ, so
  each statement of a chunk reads the same snapshot of events and items; a worker that
  waited for the lock gets a serialization failure and leaves the chunk to the next run.
- Days are rebuilt from raw events when an item's category changed (it was rolled up
  under the old one), a few per update, and by ``rebuild_days``; ``reset_rollups`` starts
  over (both from manage.py rebuild_analytics, which waits for a busy worker).
- Days are rebuilt too when the admin deletes events, or the users or items they belong
  to, or edits an event (``mark_days_of_changing_events``).
- Once an hour an update also compares the last RECHECK_DAYS days' rollups with their
  events (``_recheck_recent_days``: event counts by day, type and category) and marks the
  days that differ for a rebuild, so what the rules above cannot see (a web host whose
  clock runs behind the worker's by more than the lag, a writer open past the hold-back's
  limit, events deleted by SQL or the shell) is counted right within the hour. Changes
  made outside the admin that the counts cannot show (an event moved to another user or
  within its day, a value changed) and older days need ``rebuild_analytics --since`` the
  first day concerned. On SQLite the check holds the write lock, so ingestion waits for
  it (a week of events: a fraction of a second at a shop SQLite can serve).
"""

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from itertools import groupby
from typing import Any, NamedTuple, TypeVar

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import (
    BigIntegerField,
    Case,
    CharField,
    Count,
    F,
    FloatField,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.db.backends.utils import CursorWrapper
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast, Coalesce, TruncDate
from django.utils import timezone

from analytics.models import (
    TYPE_BITS,
    DailyEventRollup,
    DailyPropertyRollup,
    RollupDirtyDay,
    RollupDirtyItem,
    RollupState,
    UserDayActivity,
    UserDayRollup,
    first_at_field,
)
from ingestion.models import EndUser, Event, Item

logger = logging.getLogger(__name__)

BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)
ROLLUP_CHUNK_EVENTS = 200_000
ANALYZE_AFTER_EVENTS = 100_000
# Days rebuilt per update after category changes: a recategorised catalog is worked off
# over several updates instead of one transaction holding the rollup lock for minutes.
DIRTY_DAYS_PER_CHUNK = 5
DIRTY_ITEMS_PER_CHUNK = 100
# How often, and over how many days up to the watermark's, an update compares the rollups
# with the events: an hour's wait for a rare repair, and about a week of events read.
RECHECK_INTERVAL = timedelta(hours=1)
RECHECK_DAYS = 7

# A breakdown's bucket for events without the property (or with it null).
NONE_VALUE = "(none)"
# Days of events before the watermark looked at before a property key is counted over the
# whole log (_sync_property_keys): a week shows a key with too many values a day, and
# reading it took 0.5-0.7 s per key at 10M events against 42 s for the whole log
# (benchmarks/README.md, session 30).
PROPERTY_CHECK_DAYS = 7

T = TypeVar("T")


@dataclass(frozen=True)
class RollupProgress:
    events: int  # rolled up by this call
    watermark: datetime
    caught_up: bool


class RollupBusy(Exception):
    """Another worker holds the rollups; this run leaves the work to it or the next run."""


def _lag() -> timedelta:
    return timedelta(seconds=settings.ANALYTICS_ROLLUP_LAG_SECONDS)


def _upper_bound(now: datetime) -> datetime:
    """How far the watermark may move now: ROLLUP_LAG_SECONDS short of now, and of the
    start of the oldest other transaction writing to the tables store_events writes,
    which stamps its events' received_at when their transaction begins, so they stay in
    the raw tail until it commits or rolls back. Read before the update's snapshot is
    taken: a writer that commits in between is then in the snapshot. The writer's start
    is taken as its age on the database's clock, so the two hosts' clocks need not agree.
    A writer open longer than ANALYTICS_ROLLUP_MAX_LAG_SECONDS (a session left idle in a
    transaction) no longer holds the watermark back, which would stall every dashboard on
    the raw tail; the hourly check counts its events once it commits. Sessions of other
    database roles show no start (without pg_read_all_stats) and hold nothing back."""
    if connection.vendor != "postgresql":
        return now - _lag()
    tables = [model._meta.db_table for model in (Event, EndUser, Item)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT EXTRACT(EPOCH FROM clock_timestamp() - MIN(activity.xact_start)) "
            "FROM pg_locks held JOIN pg_stat_activity activity ON activity.pid = held.pid "
            "WHERE held.locktype = 'relation' AND held.mode = 'RowExclusiveLock' "
            "AND held.pid <> pg_backend_pid() "
            "AND held.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            f"AND held.relation IN ({', '.join(['to_regclass(%s)'] * len(tables))}) "
            "AND activity.xact_start > clock_timestamp() - make_interval(secs => %s)",
            [*tables, settings.ANALYTICS_ROLLUP_MAX_LAG_SECONDS])
        oldest_writer_age = cursor.fetchone()[0]
    held_back = timedelta(seconds=max(float(oldest_writer_age or 0), 0.0))
    return now - held_back - _lag()


@contextmanager
def _rollup_transaction() -> Iterator[None]:
    """A transaction that reads one snapshot throughout on PostgreSQL (REPEATABLE READ;
    only settable on the outermost block: within a caller's transaction, its level holds)."""
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _locked_state() -> RollupState:
    """Within a transaction: the state row, locked (created at the beginning of time when
    missing, so the first updates roll up the whole log)."""
    try:
        RollupState.objects.get_or_create(pk=1, defaults={
            "watermark": BEGINNING, "time_zone": settings.TIME_ZONE,
            "updated_at": timezone.now()})
    except (IntegrityError, RollupState.DoesNotExist) as error:
        # A first state row created by another worker at the same moment.
        raise RollupBusy(str(error)) from error
    return RollupState.objects.select_for_update().get(pk=1)


def _is_contention(error: OperationalError) -> bool:
    """Another worker's transaction got in the way (PostgreSQL serialization failure or
    deadlock, SQLite's lock timeout); any other database error is not ours to swallow."""
    sqlstate = getattr(error.__cause__, "sqlstate", None)
    return sqlstate in ("40001", "40P01") or "database is locked" in str(error)


@contextmanager
def _contended_as_busy() -> Iterator[None]:
    try:
        yield
    except OperationalError as error:
        if _is_contention(error):
            raise RollupBusy(str(error)) from error
        raise


def retry_while_busy(action: Callable[[], T], *, attempts: int = 120,
                     pause_seconds: float = 1.0) -> T:
    """For commands an admin runs while beat keeps updating: wait for the other worker."""
    for attempt in range(attempts - 1):
        try:
            return action()
        except RollupBusy:
            time.sleep(pause_seconds)
    return action()


def daily_event_rows(events: QuerySet[Event]) -> QuerySet:
    """The events' DailyEventRollup figures: per day, event_type and category, events,
    value_sum and value_events. Readers compute the raw tail with it and the hourly check
    compares the rollups with it; _add counts the same figures from its batch table."""
    return (events.annotate(day=TruncDate("timestamp"), event_type=F("type"),
                            category=Coalesce("item__category", Value("")))
            .values("day", "event_type", "category")
            .annotate(events=Count("id"),
                      value_sum=Coalesce(Sum("value"), Value(0.0), output_field=FloatField()),
                      value_events=Count("value")))


def type_bit() -> Case:
    """For event querysets: the event's type's bit in TYPE_BITS (0 for other types)."""
    return Case(*[When(type=event_type, then=Value(bit)) for event_type, bit in TYPE_BITS.items()],
                default=Value(0), output_field=BigIntegerField())


class _PropertyKeyText(KeyTextTransform):
    """KeyTextTransform whose key is always an object's key, and whose JSON null is SQL NULL
    on both databases. Django reads an integer-looking key ("2024", an experiment's id) as
    an array index, which finds nothing in an event's properties object; and on SQLite it
    gives a null value as the text 'null', where PostgreSQL's ->> gives NULL, so a breakdown
    had a "null" series on one database and counted those events under "(none)" on the
    other. For one top-level key, read through property_text's Cast: lookups on the
    transform itself (isnull, exact) are Django's and would read the key as Django does."""

    def as_postgresql(self, compiler, connection):
        lhs, params, _ = self.preprocess_lhs(compiler, connection)
        return f"({lhs} ->> %s)", (*params, self.key_name)

    def as_sqlite(self, compiler, connection):
        lhs, params, _ = self.preprocess_lhs(compiler, connection)
        path = "$." + json.dumps(self.key_name)
        # JSON_EXTRACT gives true and false as 1 and 0; ->> writes them out.
        return (f"(CASE WHEN JSON_TYPE({lhs}, %s) IN ('true', 'false') "
                f"THEN JSON_TYPE({lhs}, %s) ELSE JSON_EXTRACT({lhs}, %s) END)", (*params, path) * 3)


def property_text(key: str) -> Cast:
    """For event querysets: ``properties[key]`` as plain text; compared as a string, not as
    JSON."""
    return Cast(_PropertyKeyText(key, "properties"), CharField())


def property_bucket(key: str) -> Coalesce:
    """For event querysets: the trends breakdown bucket of ``properties[key]``."""
    return Coalesce(property_text(key), Value(NONE_VALUE), output_field=CharField())


def property_day_rows(events: QuerySet[Event], *, key: str, by_category: bool) -> QuerySet:
    """The events' DailyPropertyRollup figures for `key`: per day, type, item category
    ("" for none; "" throughout unless by_category) and bucket, events, value_sum and
    value_events. Readers compute the raw tail with it; _add_property_rows counts the same
    figures into the rollup."""
    category = Coalesce("item__category", Value("")) if by_category else Value("")
    return (events.annotate(day=TruncDate("timestamp"), bucket=property_bucket(key),
                            category=category)
            .values("day", "type", "category", "bucket")
            .annotate(events=Count("id"),
                      value_sum=Coalesce(Sum("value"), Value(0.0), output_field=FloatField()),
                      value_events=Count("value"))
            .order_by())


def _insert_property_rows(cursor: CursorWrapper, *, key: str, every_category: bool,
                          grouped: tuple[str, list[object]]) -> None:
    """Adds the figures of `grouped`, SQL with property_day_rows' columns (day, type,
    category, bucket, events, value_sum, value_events) for `key`, to DailyPropertyRollup's
    rows per category, or (every_category) to those summing every category."""
    table = DailyPropertyRollup._meta.db_table
    merges = ", ".join(_merged(table, _Column(name, "", []))
                       for name in ("events", "value_sum", "value_events"))
    grouped_sql, grouped_params = grouped
    # "WHERE true": SQLite needs it to parse INSERT ... SELECT ... ON CONFLICT.
    cursor.execute(
        f"INSERT INTO {table} (day, event_type, key, every_category, category, value, "
        "value_hash, events, value_sum, value_events) SELECT day, type, %s, %s, category, "
        f"bucket, MD5(bucket), events, value_sum, value_events FROM ({grouped_sql}) AS grouped "
        "WHERE true ON CONFLICT (day, event_type, key, every_category, category, value_hash) "
        f"DO UPDATE SET {merges}",
        [key, every_category, *grouped_params])


def _add_property_rows(events: QuerySet[Event], *, keys: list[str]) -> None:
    """Adds the events' DailyPropertyRollup figures for each of `keys`, two groupings of
    the events per key (per category, and over every category): for a key newly
    configured, over the whole log (an update's events are counted from its batch table
    instead, _add)."""
    with connection.cursor() as cursor:
        for key in keys:
            for every_category in (False, True):
                grouped = property_day_rows(events, key=key, by_category=not every_category)
                _insert_property_rows(cursor, key=key, every_category=every_category,
                                      grouped=grouped.query.sql_with_params())


def _property_column(index: int) -> str:
    """The batch table's column holding property_bucket of ANALYTICS_ROLLUP_PROPERTIES'
    index-th key."""
    return f"property_{index}"


def _sync_property_keys(state: RollupState) -> None:
    """Within the locked transaction: DailyPropertyRollup counts the keys of
    settings.ANALYTICS_ROLLUP_PROPERTIES over every event the rollups hold. A key taken
    out loses its rows; a key added is counted over the events received before the
    watermark, in this update (two passes over the log per key, by category and over
    every category: 42 s per key at 10M events, benchmarks/README.md, session 27), unless
    it has too many values a day (_refuse_property_keys): the last PROPERTY_CHECK_DAYS of
    events are looked at first, so a key such as an order id is refused before millions of
    rows are written (on the first update, whose watermark is the beginning, there are none
    yet: its first chunk's rows are checked after), and the whole log's rows after. A
    refusal stands until the key is taken out or the limit changes; a lower limit is
    applied to a counted key on the days updates add to. The keys and the limit are the
    settings of the process running the update, so every worker and manage.py command must
    share them, or each would count its own keys over the whole log again."""
    limit = settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES
    configured = list(dict.fromkeys(settings.ANALYTICS_ROLLUP_PROPERTIES))
    refused = {key: why for key, why in state.refused_property_keys.items()
               if key in configured and why["limit"] == limit}
    wanted = [key for key in configured if key not in refused]
    if state.property_keys == wanted and state.refused_property_keys == refused:
        return
    kept = [key for key in wanted if key in state.property_keys]
    DailyPropertyRollup.objects.exclude(key__in=kept).delete()
    recent = Event.objects.filter(
        received_at__lt=state.watermark,
        timestamp__gte=state.watermark - timedelta(days=PROPERTY_CHECK_DAYS))
    for key in wanted:
        if key not in kept and (why := _crowded(key, recent.annotate(
                day=TruncDate("timestamp"), bucket=property_bucket(key)), column="bucket")):
            refused[key] = why
    added = [key for key in wanted if key not in kept and key not in refused]
    if added and state.watermark > BEGINNING:
        logger.warning("Rollup property keys %s added: counting them over the event log",
                       added)
    _add_property_rows(Event.objects.filter(received_at__lt=state.watermark), keys=added)
    refused.update(_crowded_rollup_keys(added))
    state.property_keys = wanted
    _refuse_property_keys(state, refused)


def _crowded(key: str, rows: QuerySet, *, column: str) -> dict[str, Any] | None:
    """Why `key` is refused, where a day of `rows` (with a `day`) holds more distinct
    values of `column` than ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES (events without the key
    count as one value, as their breakdown bucket does): the fullest such day, its count
    and the limit. None where no day does."""
    limit = settings.ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES
    fullest = (rows.values("day").annotate(distinct_values=Count(column, distinct=True))
               .order_by("-distinct_values", "day").values_list("day", "distinct_values")
               .first())
    if fullest is None or fullest[1] <= limit:
        return None
    return {"day": as_date(fullest[0]).isoformat(), "values": fullest[1], "limit": limit}


def _crowded_rollup_keys(keys: list[str], *, days: list[date] | None = None
                         ) -> dict[str, dict[str, Any]]:
    """_crowded of each of `keys` over its DailyPropertyRollup rows (of `days`, else all),
    for the keys that are."""
    crowded = {}
    for key in keys:
        rows = DailyPropertyRollup.objects.filter(key=key, every_category=True)
        if days is not None:
            rows = rows.filter(day__in=days)
        if why := _crowded(key, rows, column="value_hash"):
            crowded[key] = why
    return crowded


def _refuse_property_keys(state: RollupState, refused: dict[str, dict[str, Any]]) -> None:
    """Records `refused` (every key refused, with why: _crowded) in the state and stops
    counting the keys newly in it: their rows go, and trends broken down by one of them,
    or filtered on one, read raw events (analytics.insights.sources.property_days)."""
    # A key refused again under a new limit was counted over the log meanwhile: it is new.
    newly = [key for key, why in refused.items() if state.refused_property_keys.get(key) != why]
    for key in newly:
        why = refused[key]
        logger.warning("Rollup property key %r not counted: %s values on %s, more than "
                       "ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES (%s)", key, why["values"],
                       why["day"], why["limit"])
    if newly:
        DailyPropertyRollup.objects.filter(key__in=newly).delete()
    state.property_keys = [key for key in state.property_keys if key not in refused]
    state.refused_property_keys = refused


# The events of one _add, each with its day and its item's category: read from the event
# log once, where joining every event to its item for each of the three rollups took
# about a sixth of an update (benchmarks/README.md, session 16).
_BATCH_TABLE = "analytics_rollup_batch"
# _add's other temporary tables: SQLite's paths (_with_paths), the per-user days whose
# paths went stale and their events (_repair_stale_paths).
_PATHS_TABLE = "analytics_rollup_paths"
_STALE_TABLE = "analytics_rollup_stale"
_REPAIR_TABLE = "analytics_rollup_repair"
# Under SQLite's default limit of 32,766 parameters per statement.
_USERS_PER_STATEMENT = 10_000


def _type_bits_sql() -> str:
    """The OR of the type bits of a group's batch rows, as a sum of one maximum per bit:
    SQLite has no bitwise-OR aggregate."""
    return " + ".join(f"MAX(type_bit & {bit})" for bit in TYPE_BITS.values())


class _Column(NamedTuple):
    """A rollup column as _add fills it: its aggregate over a group of the batch's rows,
    and how it takes that figure into a row the rollup has already ("+": added, "|":
    ORed, "earliest" / "latest": the earlier / later time kept)."""

    name: str
    aggregate: str
    params: list[object]
    merge: str = "+"


_EARLIEST = "earliest"
_LATEST = "latest"
_KEPT = "kept"
# What _add's statements call the batch rows they group.
_ROWS = "batch_rows"


def _item_events(name: str, event_type: str) -> _Column:
    return _Column(name, "SUM(CASE WHEN event_type = %s AND item_id IS NOT NULL THEN 1 ELSE 0 "
                   "END)", [event_type])


def _first_occurrences(*, item_events_only: bool) -> list[_Column]:
    with_item = " AND item_id IS NOT NULL" if item_events_only else ""
    return [_Column(first_at_field(event_type),
                    f'MIN(CASE WHEN event_type = %s{with_item} THEN "timestamp" END)',
                    [event_type], _EARLIEST) for event_type in TYPE_BITS]


# The times of a DayPath row's first and last events: the earliest and the latest kept.
_PATH_COLUMNS = (_Column("path_start_at", 'MIN("timestamp")', [], _EARLIEST),
                 _Column("path_end_at", 'MAX("timestamp")', [], _LATEST))


def _previous_day(table: str) -> _Column:
    """UserDayActivity.previous_day of a row the batch adds: the user's latest earlier day
    in the batch or rolled up already, whichever is later (a row the batch adds to keeps
    its own; rows after a late day are linked again by _link_previous_days)."""
    in_batch = "LAG(day) OVER (PARTITION BY user_id ORDER BY day)"
    rolled_up = (f"(SELECT MAX(earlier.day) FROM {table} AS earlier WHERE "
                 f"earlier.user_id = {_ROWS}.user_id AND earlier.day < {_ROWS}.day)")
    # PostgreSQL's GREATEST skips NULLs; SQLite's max(a, b) returns NULL.
    later = (f"GREATEST({in_batch}, {rolled_up})" if connection.vendor == "postgresql"
             else f"COALESCE(MAX({in_batch}, {rolled_up}), {in_batch}, {rolled_up})")
    return _Column("previous_day", later, [], _KEPT)


def _merged(table: str, column: _Column) -> str:
    name = column.name
    if column.merge == _KEPT:
        return f"{name} = {table}.{name}"
    if column.merge in (_EARLIEST, _LATEST):
        # NULL is "none yet" on either side: PostgreSQL's LEAST skips NULLs, SQLite's
        # min(a, b) returns NULL.
        newer = "<" if column.merge == _EARLIEST else ">"
        return (f"{name} = CASE WHEN {table}.{name} IS NULL OR excluded.{name} {newer} "
                f"{table}.{name} THEN excluded.{name} ELSE {table}.{name} END")
    return f"{name} = {table}.{name} {column.merge} excluded.{name}"


def _merged_path(table: str) -> str:
    """A DayPath row's path takes an update's events' types appended when they all come
    after its last event (the earlier "]" and the later "[" cut off), else goes NULL,
    stale, for _repair_stale_paths. Every SET expression reads the row as it was."""
    return (f"path = CASE WHEN {table}.path IS NOT NULL "
            f"AND excluded.path_start_at > {table}.path_end_at "
            f"THEN substr({table}.path, 1, length({table}.path) - 1) || ',' "
            f"|| substr(excluded.path, 2) END")


def _with_paths(cursor: CursorWrapper, *, source: str, key: tuple[str, ...]) -> tuple[str, str]:
    """(FROM, aggregate): the rows of `source` (a table shaped as _batch_rows), named
    _ROWS, to group by `key`, and the aggregate of a group's path over them: its event
    types in time order as a JSON array, repeats in a row folded. PostgreSQL concatenates
    them in order as it groups. SQLite before 3.44 cannot order an aggregate's input (and
    concatenating in a window's order copies the growing text at every row, which took
    40 s for one user's day of 32,000 events), so there Python folds the rows, read in
    order, into a temporary table joined to them."""
    key_columns = ", ".join(key)
    if connection.vendor == "postgresql":
        order = f'PARTITION BY {key_columns} ORDER BY "timestamp", id'
        return (f"(SELECT *, LAG(event_type) OVER ({order}) AS before FROM {source}) "
                f"AS {_ROWS}",
                "'[' || string_agg(CASE WHEN before IS NULL OR before <> event_type "
                "THEN to_json(event_type)::text END, ',' ORDER BY \"timestamp\", id) || ']'")
    cursor.execute(f'SELECT {key_columns}, event_type FROM {source} '
                   f'ORDER BY {key_columns}, "timestamp", id')
    paths = [(*group, json.dumps([event_type for event_type, _ in groupby(
                 row[-1] for row in rows)], separators=(",", ":")))
             for group, rows in groupby(cursor.fetchall(), key=lambda row: row[:-1])]
    cursor.execute(f"DROP TABLE IF EXISTS {_PATHS_TABLE}")
    cursor.execute(f"CREATE TEMPORARY TABLE {_PATHS_TABLE} ({key_columns}, path)")
    cursor.executemany(f"INSERT INTO {_PATHS_TABLE} VALUES "
                       f"({', '.join(['%s'] * (len(key) + 1))})", paths)
    return (f"(SELECT * FROM {source} JOIN {_PATHS_TABLE} USING ({key_columns})) AS {_ROWS}",
            "MAX(path)")


def _batch_rows(events: QuerySet[Event], *, property_keys: list[str]) -> tuple[str, tuple]:
    """SQL with the columns _add's temporary tables hold: each event's day, time, id, type
    and its bit, user, item category, value and item, and its bucket of each property key
    (_property_column)."""
    buckets = {_property_column(index): property_bucket(key)
               for index, key in enumerate(property_keys)}
    return (events.annotate(day=TruncDate("timestamp"), event_type=F("type"),
                            type_bit=type_bit(), category=Coalesce("item__category", Value("")),
                            **buckets)
            .values_list("day", "timestamp", "id", "event_type", "type_bit", "user_id",
                         "category", "value", "item_id", *buckets)
            .query.sql_with_params())


_PER_USER_ROLLUPS = ((UserDayRollup, ("day", "user_id", "category")),
                     (UserDayActivity, ("day", "user_id")))


def _repair_stale_paths(cursor: CursorWrapper, *, received_before: datetime) -> None:
    """Recomputes every stale path (this update's: an event at or before a row's last one)
    from all the events of its user's day that the rollups hold, read through the (user,
    timestamp) index: a late event costs its user's day, not a rebuild of every user's.
    UPDATE ... FROM needs SQLite 3.33 or later."""
    stale = " UNION ".join(f"SELECT day, user_id FROM {model._meta.db_table} "
                           "WHERE path IS NULL" for model, _ in _PER_USER_ROLLUPS)
    cursor.execute(f"SELECT MIN(day), MAX(day) FROM ({stale}) AS stale")  # partial indexes
    first_day, last_day = cursor.fetchone()
    if first_day is None:  # the common case: no temporary tables to create
        return
    cursor.execute(f"CREATE TEMPORARY TABLE {_STALE_TABLE} AS {stale}")
    events = Event.objects.filter(
        user_id__in=RawSQL(f"SELECT user_id FROM {_STALE_TABLE}", []),
        timestamp__gte=_day_bounds(as_date(first_day))[0],
        timestamp__lt=_day_bounds(as_date(last_day))[1], received_at__lt=received_before)
    events_sql, events_params = _batch_rows(events, property_keys=[])
    cursor.execute(f"CREATE TEMPORARY TABLE {_REPAIR_TABLE} AS SELECT held.* FROM "
                   f"({events_sql}) AS held JOIN {_STALE_TABLE} AS stale "
                   "ON stale.day = held.day AND stale.user_id = held.user_id", events_params)
    for model, key in _PER_USER_ROLLUPS:
        table = model._meta.db_table
        source, path = _with_paths(cursor, source=_REPAIR_TABLE, key=key)
        cursor.execute(
            f"UPDATE {table} SET path = repaired.path FROM (SELECT {', '.join(key)}, "
            f"{path} AS path FROM {source} GROUP BY {', '.join(key)}) AS repaired WHERE "
            + " AND ".join(f"{table}.{column} = repaired.{column}" for column in key))
    cursor.execute(f"DROP TABLE {_REPAIR_TABLE}")
    cursor.execute(f"DROP TABLE {_STALE_TABLE}")


def date_param(day: date) -> date | str:
    # SQLite stores dates as ISO text; PostgreSQL compares date to date.
    return day if connection.vendor == "postgresql" else day.isoformat()


def _link_previous_days(cursor: CursorWrapper, *, touched_sql: str, params: list[Any]) -> None:
    """Links UserDayActivity rows to their user's day before them again where that changed,
    for the (user_id, first_day) pairs `touched_sql` selects: the rows of each user from
    that day on (a late day added before them, or a day's row rebuilt away). An update's
    events are mostly its users' latest: that leaves a row or two per user to look at,
    each found through the (user, day) index."""
    table = connection.ops.quote_name(UserDayActivity._meta.db_table)
    differs = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    cursor.execute(
        f"UPDATE {table} SET previous_day = linked.previous_day FROM (SELECT later.day, "
        f"later.user_id, (SELECT MAX(earlier.day) FROM {table} AS earlier WHERE "
        "earlier.user_id = later.user_id AND earlier.day < later.day) AS previous_day "
        f"FROM ({touched_sql}) AS touched JOIN {table} AS later "
        "ON later.user_id = touched.user_id AND later.day >= touched.first_day) AS linked "
        f"WHERE {table}.day = linked.day AND {table}.user_id = linked.user_id "
        f"AND {table}.previous_day {differs} linked.previous_day", params)


def _add(events: QuerySet[Event], *, received_before: datetime,
         property_keys: list[str]) -> list[date]:
    """Adds the events' counts to the rollups, creating rows or adding to existing ones
    (type bits are ORed, first occurrences keep the earlier, paths are appended, or
    recomputed from the events received before `received_before`, which the rollups then
    hold, where an event came at or before a row's last one): the events are copied once
    into a temporary table (_batch_rows), which one INSERT ... SELECT per rollup
    aggregates (no rows cross the wire, but for paths on SQLite). The figures are those
    the raw tail computes in analytics/insights/sources.py
    (tests/analytics/insights/test_sources.py compares the two). Called within the
    update's transaction, which drops the tables with the rest of its work if a statement
    fails. The database role needs PostgreSQL's TEMPORARY privilege, which every role has
    unless it was revoked. Returns the days the events fell on where `property_keys` are
    counted (for _crowded), else none."""
    batch_sql, batch_params = _batch_rows(events, property_keys=property_keys)
    counted = _Column("events", "COUNT(*)", [])
    bits = _Column("type_bits", _type_bits_sql(), [], "|")
    rollups: list[tuple[str, tuple[str, ...], list[_Column]]] = [
        (DailyEventRollup._meta.db_table, ("day", "event_type", "category"),
         [counted, _Column("value_sum", "COALESCE(SUM(value), 0.0)", []),
          _Column("value_events", "COUNT(value)", [])]),
        (UserDayRollup._meta.db_table, ("day", "user_id", "category"),
         [counted, _item_events("views", "view"), _item_events("purchases", "purchase"), bits,
          *_first_occurrences(item_events_only=True), *_PATH_COLUMNS]),
        (UserDayActivity._meta.db_table, ("day", "user_id"),
         [counted, bits, *_first_occurrences(item_events_only=False), *_PATH_COLUMNS,
          _previous_day(UserDayActivity._meta.db_table)]),
    ]
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE {_BATCH_TABLE} AS {batch_sql}", batch_params)
        for table, key, columns in rollups:
            key_columns = ", ".join(key)
            names = [column.name for column in columns]
            merges = [_merged(table, column) for column in columns]
            aggregates = [column.aggregate for column in columns]
            source = f"{_BATCH_TABLE} AS {_ROWS}"
            if "path_end_at" in names:
                source, path = _with_paths(cursor, source=_BATCH_TABLE, key=key)
                names.append("path")
                aggregates.append(path)
                merges.append(_merged_path(table))
            # "WHERE true": SQLite needs it to parse INSERT ... SELECT ... ON CONFLICT.
            cursor.execute(
                f"INSERT INTO {table} ({key_columns}, {', '.join(names)}) "
                f"SELECT {key_columns}, {', '.join(aggregates)} FROM {source} "
                f"WHERE true GROUP BY {key_columns} "
                f"ON CONFLICT ({key_columns}) DO UPDATE SET " + ", ".join(merges),
                [param for column in columns for param in column.params])
        # From the batch, which has each event's category already: grouping the events
        # again from the log and joining them to their items took an update of 10,000
        # events at 10M 38-82 ms per key (benchmarks/README.md, session 27).
        for index, key in enumerate(property_keys):
            bucket = _property_column(index)
            for every_category in (False, True):
                # PostgreSQL refuses a constant in GROUP BY: the summing rows' "" is not one.
                category = "''" if every_category else "category"
                groups = f"day, event_type, {bucket}" + ("" if every_category else ", category")
                _insert_property_rows(cursor, key=key, every_category=every_category, grouped=(
                    f"SELECT day, event_type AS type, {category} AS category, {bucket} AS "
                    "bucket, COUNT(*) AS events, COALESCE(SUM(value), 0.0) AS value_sum, "
                    f"COUNT(value) AS value_events FROM {_BATCH_TABLE} GROUP BY {groups}", []))
        _link_previous_days(cursor, touched_sql="SELECT user_id, MIN(day) AS first_day "
                            f"FROM {_BATCH_TABLE} GROUP BY user_id", params=[])
        _repair_stale_paths(cursor, received_before=received_before)
        days = []
        if property_keys:
            cursor.execute(f"SELECT DISTINCT day FROM {_BATCH_TABLE}")
            days = [as_date(day) for day, in cursor.fetchall()]
        cursor.execute(f"DROP TABLE {_BATCH_TABLE}")
        if connection.vendor != "postgresql":
            cursor.execute(f"DROP TABLE IF EXISTS {_PATHS_TABLE}")  # _with_paths's, SQLite's
    return days


def as_date(value: date | str) -> date:
    """Raw cursors return SQLite's dates as text, and PostgreSQL's DATE_TRUNC (the ORM's
    Trunc to a date) as a timestamp."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(value)


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()))
    return start, timezone.make_aware(datetime.combine(day + timedelta(days=1),
                                                       datetime.min.time()))


def _rebuild_day(day: date, *, watermark: datetime, property_keys: list[str]) -> None:
    start, end = _day_bounds(day)
    DailyEventRollup.objects.filter(day=day).delete()
    DailyPropertyRollup.objects.filter(day=day).delete()
    UserDayRollup.objects.filter(day=day).delete()
    activity = UserDayActivity.objects.filter(day=day)
    users = set(activity.values_list("user_id", flat=True))
    activity.delete()
    _add(Event.objects.filter(timestamp__gte=start, timestamp__lt=end,
                              received_at__lt=watermark), received_before=watermark,
         property_keys=property_keys)
    # A user with no events left that day has rows after it to link past it (_add linked
    # the others).
    gone = sorted(users - set(activity.values_list("user_id", flat=True)))
    users_table = connection.ops.quote_name(EndUser._meta.db_table)
    for chunk in range(0, len(gone), _USERS_PER_STATEMENT):
        part = gone[chunk:chunk + _USERS_PER_STATEMENT]
        with connection.cursor() as cursor:
            _link_previous_days(cursor, touched_sql=(
                f"SELECT id AS user_id, %s AS first_day FROM {users_table} "
                f"WHERE id IN ({', '.join(['%s'] * len(part))})"),
                params=[date_param(day), *part])


def _mark_days_of(events: QuerySet[Event]) -> None:
    """Marks the days the events happened on for the next updates to rebuild."""
    days = events.annotate(day=TruncDate("timestamp")).values_list("day", flat=True).distinct()
    RollupDirtyDay.objects.bulk_create([RollupDirtyDay(day=day) for day in days],
                                       ignore_conflicts=True)


def _dirty_items_to_days(state: RollupState) -> bool:
    """Turns up to DIRTY_ITEMS_PER_CHUNK items whose category changed into the days holding
    their rolled-up events; returns whether more items wait."""
    marks = list(RollupDirtyItem.objects.order_by("item_id")
                 .values_list("item_id", "marked_at")[:DIRTY_ITEMS_PER_CHUNK + 1])
    batch, more = marks[:DIRTY_ITEMS_PER_CHUNK], len(marks) > DIRTY_ITEMS_PER_CHUNK
    if not batch:
        return False
    _mark_days_of(Event.objects.filter(item_id__in=[item_id for item_id, _ in batch],
                                       received_at__lt=state.watermark))
    # Only the marks read: an item marked again meanwhile stays (on PostgreSQL the delete
    # then fails to serialise and the update runs again).
    matching = Q()
    for item_id, marked_at in batch:
        matching |= Q(item_id=item_id, marked_at=marked_at)
    RollupDirtyItem.objects.filter(matching).delete()
    return more


def _rebuild_dirty_days(state: RollupState) -> bool:
    """Rebuilds up to DIRTY_DAYS_PER_CHUNK marked days; returns whether any remain."""
    days = list(RollupDirtyDay.objects.order_by("day")
                .values_list("day", flat=True)[:DIRTY_DAYS_PER_CHUNK + 1])
    for day in days[:DIRTY_DAYS_PER_CHUNK]:
        _rebuild_day(day, watermark=state.watermark, property_keys=state.property_keys)
    RollupDirtyDay.objects.filter(day__in=days[:DIRTY_DAYS_PER_CHUNK]).delete()
    return len(days) > DIRTY_DAYS_PER_CHUNK


def _recheck_recent_days(state: RollupState, *, now: datetime) -> None:
    """Marks for rebuild the days, from RECHECK_DAYS before the watermark's on, whose
    rollup rows count other events by type and category than the events received before
    the watermark (counts only: sums of values may differ in their last bits by the order
    they were added in). Runs under the rollup lock, so the two sides are one state."""
    since = timezone.localdate(state.watermark) - timedelta(days=RECHECK_DAYS - 1)
    counted = Event.objects.filter(timestamp__gte=_day_bounds(since)[0],
                                   received_at__lt=state.watermark)
    key = ("day", "event_type", "category", "events", "value_events")
    from_events = set(daily_event_rows(counted).values_list(*key))
    rolled = set(DailyEventRollup.objects.filter(day__gte=since).values_list(*key))
    differing = {row[0] for row in from_events ^ rolled}
    RollupDirtyDay.objects.bulk_create([RollupDirtyDay(day=day) for day in differing],
                                       ignore_conflicts=True)
    # Rows added without their previous day (by a worker still running the code before
    # migration 0013 while it was applied) are linked within the hour.
    with connection.cursor() as cursor:
        _link_previous_days(cursor, touched_sql=(
            "SELECT user_id, MIN(day) AS first_day FROM "
            f"{connection.ops.quote_name(UserDayActivity._meta.db_table)} "
            "WHERE day >= %s AND previous_day IS NULL GROUP BY user_id"),
            params=[date_param(since)])
    state.checked_at = now


def _chunk_end(watermark: datetime, upper: datetime) -> datetime:
    """Where a chunk starting at the watermark ends: after ROLLUP_CHUNK_EVENTS events, or
    later when they share one received_at (a whole import can), or at `upper`."""
    pending = Event.objects.filter(received_at__gte=watermark, received_at__lt=upper)
    boundary = (pending.order_by("received_at")
                .values_list("received_at", flat=True)[ROLLUP_CHUNK_EVENTS:ROLLUP_CHUNK_EVENTS + 1]
                .first())
    if boundary is None:
        return upper
    if boundary <= watermark:
        boundary = (pending.filter(received_at__gt=watermark).order_by("received_at")
                    .values_list("received_at", flat=True).first()) or upper
    return min(boundary, upper)


def _roll_up_chunk(*, now: datetime) -> RollupProgress:
    started = time.monotonic()
    upper = _upper_bound(now)
    with _contended_as_busy(), _rollup_transaction():
        state = _locked_state()
        if state.time_zone != settings.TIME_ZONE:
            _empty_rollups(state)  # days were cut in another time zone: start over
        _sync_property_keys(state)
        # A check dated after now (a clock stepped back) would otherwise hold off the next.
        if state.checked_at is None or not timedelta(0) <= now - state.checked_at < RECHECK_INTERVAL:
            _recheck_recent_days(state, now=now)
        items_left = _dirty_items_to_days(state)
        days_left = _rebuild_dirty_days(state) or items_left
        if upper <= state.watermark:
            state.updated_at, state.last_events = timezone.now(), 0
            state.save()
            return RollupProgress(events=0, watermark=state.watermark,
                                  caught_up=not days_left)
        end = _chunk_end(state.watermark, upper)
        window = Event.objects.filter(received_at__gte=state.watermark, received_at__lt=end)
        count = window.count()
        if count:
            days = _add(window, received_before=end, property_keys=state.property_keys)
            # A key counted so far may take on more values (ids sent under an old name).
            if crowded := _crowded_rollup_keys(state.property_keys, days=days):
                _refuse_property_keys(state, {**state.refused_property_keys, **crowded})
        state.watermark = end
        state.updated_at, state.last_events = timezone.now(), count
        state.last_seconds = time.monotonic() - started
        state.save()
        return RollupProgress(events=count, watermark=end,
                              caught_up=end == upper and not days_left)


def roll_up_new_events(*, time_budget_seconds: float | None = None,
                       on_chunk: Callable[[RollupProgress], None] | None = None,
                       now: datetime | None = None) -> RollupProgress:
    """Rolls up chunk after chunk until caught up (or the time budget is spent); returns
    the total. Raises RollupBusy when another worker holds the rollups."""
    started = time.monotonic()
    total = 0
    while True:
        progress = _roll_up_chunk(now=now or timezone.now())
        total += progress.events
        if on_chunk:
            on_chunk(progress)
        out_of_time = (time_budget_seconds is not None
                       and time.monotonic() - started >= time_budget_seconds)
        if progress.caught_up or out_of_time:
            if total >= ANALYZE_AFTER_EVENTS:
                _analyze_rollups()
            return RollupProgress(events=total, watermark=progress.watermark,
                                  caught_up=progress.caught_up)


def _analyze_rollups() -> None:
    """Fresh planner statistics after a large update: estimates from an empty table made
    PostgreSQL join the rollups by nested loops (41 s instead of 0.4 s for a lifecycle);
    autovacuum would catch up only later."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {DailyEventRollup._meta.db_table}, "
                           f"{DailyPropertyRollup._meta.db_table}, "
                           f"{UserDayRollup._meta.db_table}, "
                           f"{UserDayActivity._meta.db_table}")


def pending_events() -> int:
    """Events received at or after the watermark (all of them before any update)."""
    state = RollupState.objects.filter(pk=1).first()
    watermark = state.watermark if state else BEGINNING
    return Event.objects.filter(received_at__gte=watermark).count()


def _empty_rollups(state: RollupState) -> None:
    """Within the locked transaction: nothing rolled up, the watermark at the beginning.
    PostgreSQL truncates the rollup tables (readers wait for the transaction to commit):
    deleting their millions of rows left the files three to four times their live size
    once the history was rolled up again, and every dashboard's scan read the dead space
    (benchmarks/README.md, session 20). The small dirty-item and dirty-day tables are
    deleted from: a table with a checked foreign key cannot be truncated in a transaction
    that wrote to it (its deferred checks are pending)."""
    rollups = (DailyEventRollup, DailyPropertyRollup, UserDayRollup, UserDayActivity)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("TRUNCATE " + ", ".join(connection.ops.quote_name(model._meta.db_table)
                                                   for model in rollups))
    else:
        for model in rollups:
            model.objects.all().delete()
    for model in (RollupDirtyItem, RollupDirtyDay):
        model.objects.all().delete()
    state.watermark, state.time_zone = BEGINNING, settings.TIME_ZONE
    state.property_keys = []


def reset_rollups() -> None:
    """Empties the rollups and moves the watermark back to the beginning, in one
    transaction: readers then answer from raw events until roll_up_new_events has gone
    over the log again."""
    def reset() -> None:
        with _contended_as_busy(), _rollup_transaction():
            state = _locked_state()
            _empty_rollups(state)
            state.rebuilt_at = state.updated_at = timezone.now()
            state.save()

    retry_while_busy(reset)


def rebuild_days(*, since: date, on_day: Callable[[date, int, int], None] | None = None) -> int:
    """Recomputes each day from `since` to the last event's (or today) from raw events,
    one day per transaction (the day's rows are replaced, so readers never see a day half
    done); returns the number of days."""
    last = Event.objects.order_by("-timestamp").values_list("timestamp", flat=True).first()
    last_day = max(timezone.localtime(last).date() if last else since, timezone.localdate())
    days = [since + timedelta(days=n) for n in range((last_day - since).days + 1)]
    def rebuild(day: date) -> None:
        with _contended_as_busy(), _rollup_transaction():
            state = _locked_state()
            _rebuild_day(day, watermark=state.watermark, property_keys=state.property_keys)
            state.rebuilt_at = timezone.now()
            state.save(update_fields=["rebuilt_at"])

    for index, day in enumerate(days):
        retry_while_busy(partial(rebuild, day))
        if on_day:
            on_day(day, index + 1, len(days))
    return len(days)


def mark_items_recategorised(*, item_pks: list[int]) -> None:
    """Called in the transaction that changed the items' categories, so the mark commits
    with the change; marking an item marked already moves its marked_at."""
    now = timezone.now()
    RollupDirtyItem.objects.bulk_create(
        [RollupDirtyItem(item_id=pk, marked_at=now) for pk in sorted(set(item_pks))],
        update_conflicts=True, unique_fields=["item"], update_fields=["marked_at"])


def mark_days_of_changing_events(*, events: QuerySet[Event]) -> None:
    """Called in the transaction that deletes the events, before it does (or that edits
    them, before and after): their days are rebuilt from raw events by the next update.
    The rollup state row is locked and written until that transaction ends. An update that
    read the database before it commits then fails to serialise on PostgreSQL instead of
    rebuilding a day marked earlier from events as they were (and taking the mark away);
    SQLite runs the two one after the other. Every day is marked, rolled up or not, since
    the update before may have rolled up events that are gone."""
    if not connection.in_atomic_block:
        raise RuntimeError("mark_days_of_changing_events must run in the changing transaction")
    _locked_state()
    RollupState.objects.filter(pk=1).update(watermark=F("watermark"))
    _mark_days_of(events)


def rollup_status(*, count_pending: bool = True) -> dict:
    """The operations page's and /readyz's view: the watermark, the lag (how long the
    oldest event not rolled up yet has waited; 0 when none waits), when the last update
    ran and what it did. Counting the events waiting is left out for probes: before the
    first update it would count the whole log."""
    state = RollupState.objects.filter(pk=1).first()
    watermark = state.watermark if state else BEGINNING
    waiting = Event.objects.filter(received_at__gte=watermark)
    oldest = waiting.order_by("received_at").values_list("received_at", flat=True).first()
    lag = max((timezone.now() - oldest).total_seconds(), 0.0) if oldest else 0.0
    return {
        "watermark": state.watermark if state else None,
        "lag_seconds": lag,
        "lagging": lag > settings.ANALYTICS_ROLLUP_MAX_LAG_SECONDS,
        "updated_at": state.updated_at if state else None,
        "last_events": state.last_events if state else 0,
        "last_seconds": state.last_seconds if state else 0.0,
        "rebuilt_at": state.rebuilt_at if state else None,
        "checked_at": state.checked_at if state else None,
        "days_to_rebuild": RollupDirtyDay.objects.count(),
        "property_keys": state.property_keys if state else [],
        # Pairs, not a dict: a template looks a key named "items" up before the method.
        "refused_property_keys": sorted(state.refused_property_keys.items()) if state else [],
        "pending_events": waiting.count() if count_pending else None,
    }
