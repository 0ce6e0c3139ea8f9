"""Writes for the ingestion domain: events, catalog items and end users.

Events are validated in plain Python (a DRF serializer per event is too slow for
10,000 events/s) and inserted with `INSERT ... ON CONFLICT (event_id) DO NOTHING RETURNING`,
so a retried event is stored once and counted as a duplicate even when two retries race.
"""

import json
import logging
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from rest_framework_api_key.models import APIKey

from config.db import lock_until_commit
from ingestion.capture.mapping import (CaptureBatch, Reject, fits_a_text_column,
                                       payload_excerpt)
from ingestion.models import (
    HIGHEST_RATING,
    ITEM_EVENT_TYPES,
    LOWEST_RATING,
    MAX_EVENT_VALUE,
    CaptureReject,
    EndUser,
    Event,
    IdentityLink,
    Item,
    has_sentiment_text,
)
from ingestion.signals import events_stored, events_with_text_stored, item_categories_changed

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 5000
MAX_PROPERTIES_BYTES = 8 * 1024
# An event's properties may be as large as Segment lets a whole message be: SDK events
# carry what the SDKs add (posthog-js's autocapture element chains, page context).
MAX_EVENT_PROPERTIES_BYTES = 32 * 1024
MAX_ID_CHARS = 255
# PostgreSQL's text and jsonb cannot hold the NUL character, nor UTF-8 a lone surrogate
# (half of a UTF-16 pair, as JavaScript's string slicing leaves one).
NUL_MESSAGE = "Must not contain a NUL character (\\u0000)."
SURROGATE_MESSAGE = "Must be valid Unicode (it holds half of a UTF-16 surrogate pair)."
MAX_FUTURE = timedelta(hours=24)
EARLIEST_TIMESTAMP = datetime(1970, 1, 1, tzinfo=UTC)
MAX_EVENT_TYPE_CHARS = 64
# One encoder for every size check: json.dumps with options builds a new one per call.
# allow_nan=False: NaN and Infinity are not JSON, and PostgreSQL's json refuses them.
# ensure_ascii=False: the size limit counts UTF-8 bytes, and encoding them finds a lone
# surrogate (a NUL stays escaped as \u0000 either way).
_COMPACT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)
EVENT_FIELDS = {"event_id", "type", "user_id", "item_id", "timestamp", "value", "text",
                "properties", "rec_id"}


def _is_event_type_name(name: Any) -> bool:
    """Names as the SDKs' users give them ("Signed Up (Google)", "Добавлено в корзину"),
    but such as the dashboards can ask for: their lists of event types are comma-separated
    (and trimmed, as names are before they are checked)."""
    return (isinstance(name, str) and 0 < len(name) <= MAX_EVENT_TYPE_CHARS
            and name.isprintable() and "," not in name)


class RowRejected(Exception):
    def __init__(self, field_name: str, message: str):
        super().__init__(message)
        self.field = field_name
        self.message = message


@dataclass(frozen=True, slots=True)
class EventInput:
    event_id: uuid.UUID
    type: str
    user_id: str
    item_id: str | None
    timestamp: datetime
    value: float | None = None
    text: str = ""
    properties: dict = field(default_factory=dict)
    rec_id: uuid.UUID | None = None


@dataclass(frozen=True, slots=True)
class RowError:
    index: int
    field: str
    message: str


@dataclass
class BatchResult:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    errors: list[RowError] = field(default_factory=list)

    def reject(self, index: int, error: RowRejected) -> None:
        self.rejected += 1
        self.errors.append(RowError(index=index, field=error.field, message=error.message))

    def as_dict(self) -> dict:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "rejected": self.rejected,
                "errors": [{"index": e.index, "field": e.field, "message": e.message}
                           for e in self.errors]}


def _external_id(raw: Any, field_name: str, *, required: bool) -> str | None:
    if raw is None or raw == "":
        if required:
            raise RowRejected(field_name, "This field is required.")
        return None
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise RowRejected(field_name, "Must be a string or an integer.")
    text = str(raw).strip()
    if not text or len(text) > MAX_ID_CHARS:
        raise RowRejected(field_name, f"Must be 1 to {MAX_ID_CHARS} characters.")
    return _storable_text(text, field_name)


def _storable_text(text: str, field_name: str) -> str:
    """The text, unless the database could not store it (RowRejected)."""
    if "\x00" in text:
        raise RowRejected(field_name, NUL_MESSAGE)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RowRejected(field_name, SURROGATE_MESSAGE) from None
    return text


def storable_id(text: str) -> bool:
    """Whether a user or item id an SDK sent fits the id columns (_external_id's rule)."""
    return 0 < len(text) <= MAX_ID_CHARS and fits_a_text_column(text)


def _uuid(raw: Any, field_name: str) -> uuid.UUID | None:
    if raw is None or raw == "":
        return None
    if isinstance(raw, uuid.UUID):
        return raw
    try:
        return uuid.UUID(str(raw))
    except (ValueError, AttributeError, TypeError):
        raise RowRejected(field_name, "Must be a UUID.") from None


def _timestamp(raw: Any, now: datetime) -> datetime:
    if raw is None or raw == "":
        return now
    if isinstance(raw, datetime):
        parsed = raw
    elif isinstance(raw, str):
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            raise RowRejected("timestamp", "Must be an ISO 8601 date-time.") from None
    else:
        raise RowRejected("timestamp", "Must be an ISO 8601 date-time string.")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise RowRejected("timestamp", "Must include a UTC offset, e.g. 2026-01-31T12:00:00Z.")
    # Compared in UTC: a year-1 time ahead of UTC is a date before year 1 there, which
    # PostgreSQL stores and psycopg cannot read back (every page listing it would fail).
    try:
        in_utc = parsed.astimezone(UTC)
    except OverflowError:  # before year 1 or after 9999 in UTC
        in_utc = None
    if in_utc is None and parsed.year > 1:
        raise RowRejected("timestamp", "Is more than 24 hours in the future.")
    if in_utc is None or in_utc < EARLIEST_TIMESTAMP:
        raise RowRejected("timestamp", f"Must be in {EARLIEST_TIMESTAMP.year} or later.")
    if parsed - now > MAX_FUTURE:
        raise RowRejected("timestamp", "Is more than 24 hours in the future.")
    return parsed


def _value(raw: Any, event_type: str) -> float | None:
    stars = f"from {LOWEST_RATING:g} to {HIGHEST_RATING:g}"
    if raw is None or raw == "":
        if event_type == "rating":
            raise RowRejected("value", f"A rating needs a value {stars}.")
        return None
    if isinstance(raw, bool):
        raise RowRejected("value", "Must be a number.")
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise RowRejected("value", "Must be a number.") from None
    except OverflowError:  # an integer of hundreds of digits
        raise RowRejected("value", "Must be a finite number.") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise RowRejected("value", "Must be a finite number.")
    if abs(number) > MAX_EVENT_VALUE:
        raise RowRejected("value", f"Must be from {-MAX_EVENT_VALUE:g} to {MAX_EVENT_VALUE:g}.")
    if event_type in ("rating", "review") and not LOWEST_RATING <= number <= HIGHEST_RATING:
        raise RowRejected("value", f"A rating must be {stars}.")
    if event_type == "purchase" and number < 0:
        raise RowRejected("value", "A purchase amount cannot be negative.")
    return number


def _properties(raw: Any, field_name: str = "properties", *,
                max_bytes: int = MAX_PROPERTIES_BYTES) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise RowRejected(field_name, "Must be a JSON object.")
    try:
        encoded = _COMPACT_JSON.encode(raw)
    except ValueError:  # Python's json reads NaN, and 1e999 as infinity
        raise RowRejected(field_name, "Must not hold NaN or an infinite number.") from None
    except RecursionError:  # parsed near the parser's limit, encoded deeper in the stack
        raise RowRejected(field_name, "Is nested too deeply.") from None
    try:
        size = len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise RowRejected(field_name, SURROGATE_MESSAGE) from None
    if size > max_bytes:
        raise RowRejected(field_name, f"Must be at most {max_bytes // 1024} KB as JSON.")
    # The encoder escapes a NUL as \u0000, which PostgreSQL's jsonb refuses: only then is
    # the object walked, to tell it from a backslash sent before "u0000".
    if "\\u0000" in encoded and _holds_nul(raw):
        raise RowRejected(field_name, NUL_MESSAGE)
    return raw


def _object(stored: Any) -> dict:
    """Stored traits or attributes as an object: edited in the admin into anything else
    (a list, a string), they are none, as readers take them (a merge would fail)."""
    return stored if isinstance(stored, dict) else {}


def _holds_nul(value: Any) -> bool:
    """Walked with a stack of its own: JSON nested a few hundred levels deep is well
    under the size limit and would exhaust Python's recursion."""
    pending = [value]
    while pending:
        current = pending.pop()
        if isinstance(current, str):
            if "\x00" in current:
                return True
        elif isinstance(current, dict):
            pending.extend(current.keys())
            pending.extend(current.values())
        elif isinstance(current, list):
            pending.extend(current)
    return False


def parse_event(raw: Any, *, now: datetime) -> EventInput:
    """Validates one event as sent to the API; raises RowRejected naming the first bad field."""
    if not isinstance(raw, dict):
        raise RowRejected("event", "Each event must be a JSON object.")
    unknown = set(raw) - EVENT_FIELDS
    if unknown:
        raise RowRejected(sorted(unknown)[0], "Unknown field.")
    event_type = raw.get("type")
    if isinstance(event_type, str):
        event_type = event_type.strip()
    if not _is_event_type_name(event_type):
        raise RowRejected("type", f"Must be an event type name of 1 to {MAX_EVENT_TYPE_CHARS} "
                                  "printable characters, without commas.")
    user_id = _external_id(raw.get("user_id"), "user_id", required=True)
    item_id = _external_id(raw.get("item_id"), "item_id", required=event_type in ITEM_EVENT_TYPES)
    text = raw.get("text") or ""
    if not isinstance(text, str):
        raise RowRejected("text", "Must be a string.")
    if len(text) > MAX_TEXT_CHARS:
        raise RowRejected("text", f"Must be at most {MAX_TEXT_CHARS} characters.")
    _storable_text(text, "text")
    return EventInput(
        event_id=_uuid(raw.get("event_id"), "event_id") or uuid.uuid4(),
        type=event_type,
        user_id=user_id,
        item_id=item_id,
        timestamp=_timestamp(raw.get("timestamp"), now),
        value=_value(raw.get("value"), event_type),
        text=text,
        properties=_properties(raw.get("properties"), max_bytes=MAX_EVENT_PROPERTIES_BYTES),
        rec_id=_uuid(raw.get("rec_id"), "rec_id"),
    )


def ingest_events(*, events: Sequence[Any]) -> BatchResult:
    """Validates and stores a batch; valid events are stored even when others are rejected.

    Returns only after the accepted rows are committed."""
    now = timezone.now()
    result = BatchResult()
    valid: list[EventInput] = []
    for index, raw in enumerate(events):
        try:
            valid.append(parse_event(raw, now=now))
        except RowRejected as error:
            result.reject(index, error)
    if valid:
        inserted = store_events(events=valid, received_at=None)
        result.accepted = len(inserted)
        result.duplicates = len(valid) - len(inserted)
    return result


def store_events(*, events: Sequence[EventInput], received_at: datetime | None,
                 item_pks: dict[str, int] | None = None) -> list[int]:
    """Inserts events whose event_id is new; creates unknown users and items on the fly.

    ``received_at`` None (what every caller but tests passes) stamps
    the events when their own transaction begins, after any wait on user or item rows:
    the analytics rollups hold their watermark behind the transactions writing events,
    which covers a batch only if it was stamped no earlier than its transaction began.

    Users and items are written first, in a short transaction of their own and in key order,
    so concurrent batches neither deadlock on them nor queue behind each other's event
    inserts on the rows of popular users (a user's last_seen may thus move a moment before
    the events that moved it are committed). Returns the primary keys of the rows inserted,
    so callers (sentiment scoring) can act on exactly the new rows. ``item_pks`` are items
    the caller already knows to be stored (by their primary keys): they are not looked up
    again."""
    known_items = item_pks or {}
    with transaction.atomic():
        user_pks = _ensure_users(events)
        item_pks = {**known_items, **_ensure_items(
            {e.item_id for e in events if e.item_id is not None} - known_items.keys())}
    with transaction.atomic():
        # On SQLite (BEGIN IMMEDIATE) this is after the wait for the write lock.
        received_at = received_at or timezone.now()
        inserted: list[tuple[int, bool]] = []
        for start in range(0, len(events), settings.INGEST_MAX_BATCH):
            chunk = events[start:start + settings.INGEST_MAX_BATCH]
            if connection.vendor == "postgresql":
                stored = _insert_new_events_pg(chunk, user_pks, item_pks, received_at)
            else:
                stored = _insert_new_events([
                    (e.event_id, e.type, user_pks[e.user_id],
                     item_pks[e.item_id] if e.item_id is not None else None,
                     e.timestamp, received_at, e.value, e.text, e.properties, e.rec_id)
                    for e in chunk])
            # A batch that repeats an event_id stores its first copy.
            by_event_id = {e.event_id: e for e in reversed(chunk)}
            inserted.extend((pk, has_sentiment_text(
                event_type=by_event_id[event_id].type, text=by_event_id[event_id].text,
                properties=by_event_id[event_id].properties)) for pk, event_id in stored)
        if inserted:
            transaction.on_commit(partial(_announce_stored, inserted))
    return [pk for pk, _ in inserted]


def _announce_stored(inserted: list[tuple[int, bool]]) -> None:
    events_stored.send(sender=Event, count=len(inserted))
    text_event_pks = [pk for pk, has_text in inserted if has_text]
    if text_event_pks:
        events_with_text_stored.send(sender=Event, event_pks=text_event_pks)


def _insert_new_events_pg(events: Sequence[EventInput], user_pks: dict[str, int],
                          item_pks: dict[str, int],
                          received_at: datetime) -> list[tuple[int, uuid.UUID]]:
    """PostgreSQL: the batch travels as ONE json parameter built by the C JSON encoder and is
    unpacked by json_to_recordset, instead of 12,000 placeholders that Django prepares and
    psycopg quotes one by one in Python."""
    table = connection.ops.quote_name(Event._meta.db_table)
    sql = (f"INSERT INTO {table} (event_id, type, user_id, item_id, timestamp, received_at, "
           "value, text, properties, rec_id, sentiment_label, sentiment_model) "
           "SELECT v.e, v.t, v.u, v.i, v.ts, %s, v.v, v.x, v.p, v.r, '', '' "
           "FROM json_to_recordset(%s::json) AS v(e uuid, t varchar, u bigint, i bigint, "
           "ts timestamptz, v float8, x text, p jsonb, r uuid) "
           "ON CONFLICT (event_id) DO NOTHING RETURNING id, event_id")
    rows = json.dumps([
        {"e": str(e.event_id), "t": e.type, "u": user_pks[e.user_id],
         "i": item_pks[e.item_id] if e.item_id is not None else None,
         "ts": e.timestamp.isoformat(), "v": e.value, "x": e.text, "p": e.properties,
         "r": str(e.rec_id) if e.rec_id is not None else None}
        for e in events], separators=(",", ":"))
    with connection.cursor() as cursor:
        cursor.execute(sql, [received_at, rows])
        return cursor.fetchall()


# Row tuple order in store_events, then the columns whose database default is an empty string.
_INSERTED_FIELDS = ("event_id", "type", "user", "item", "timestamp", "received_at", "value",
                    "text", "properties", "rec_id", "sentiment_label", "sentiment_model")


def _insert_new_events(rows: list[tuple]) -> list[tuple[int, uuid.UUID]]:
    fields = [Event._meta.get_field(name) for name in _INSERTED_FIELDS]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    placeholders = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params: list[Any] = []
    for row in rows:
        for model_field, value in zip(fields, (*row, "", "")):
            params.append(model_field.get_db_prep_save(value, connection))
    sql = (f"INSERT INTO {quote(Event._meta.db_table)} ({columns}) VALUES "
           + ", ".join([placeholders] * len(rows))
           + f" ON CONFLICT ({quote('event_id')}) DO NOTHING RETURNING {quote('id')}, "
           + quote("event_id"))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        # SQLite returns the uuid as the hex text it stores.
        return [(pk, event_id if isinstance(event_id, uuid.UUID) else uuid.UUID(event_id))
                for pk, event_id in cursor.fetchall()]


def _ensure_users(events: Sequence[EventInput]) -> dict[str, int]:
    if connection.vendor != "postgresql":
        return _ensure_users_portable(events)
    # PostgreSQL: create unknown users and widen first_seen/last_seen in ONE statement
    # (Django's bulk_update builds a CASE WHEN per user and costs ~0.3 s per batch), locking
    # rows in user_id order, the same in every transaction, so batches never deadlock.
    seen: dict[str, tuple[datetime, datetime]] = {}
    for e in events:
        first, last = seen.get(e.user_id, (e.timestamp, e.timestamp))
        seen[e.user_id] = (min(first, e.timestamp), max(last, e.timestamp))
    table = connection.ops.quote_name(EndUser._meta.db_table)
    rows = json.dumps([{"u": uid, "f": first.isoformat(), "l": last.isoformat()}
                       for uid, (first, last) in seen.items()], separators=(",", ":"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, traits, first_seen, last_seen) "
            "SELECT v.u, '{}'::jsonb, v.f, v.l "
            "FROM json_to_recordset(%s::json) AS v(u varchar, f timestamptz, l timestamptz) "
            "ORDER BY v.u "
            f"ON CONFLICT (user_id) DO UPDATE SET "
            f"first_seen = LEAST({table}.first_seen, EXCLUDED.first_seen), "
            f"last_seen = GREATEST({table}.last_seen, EXCLUDED.last_seen) "
            "RETURNING user_id, id",
            [rows])
        return dict(cursor.fetchall())


def _ensure_users_portable(events: Iterable[EventInput]) -> dict[str, int]:
    seen: dict[str, tuple[datetime, datetime]] = {}
    for e in events:
        first, last = seen.get(e.user_id, (e.timestamp, e.timestamp))
        seen[e.user_id] = (min(first, e.timestamp), max(last, e.timestamp))
    existing = {u.user_id: u for u in EndUser.objects.filter(user_id__in=list(seen))
                .only("id", "user_id", "first_seen", "last_seen")}
    missing = [EndUser(user_id=uid, first_seen=first, last_seen=last)
               for uid, (first, last) in seen.items() if uid not in existing]
    if missing:
        missing.sort(key=lambda user: user.user_id)  # key order: racing batches queue, not deadlock
        EndUser.objects.bulk_create(missing, ignore_conflicts=True)
        existing.update({u.user_id: u for u in EndUser.objects.filter(
            user_id__in=[m.user_id for m in missing]).only("id", "user_id", "first_seen",
                                                           "last_seen")})
    changed = []
    for uid, (first, last) in seen.items():
        user = existing[uid]
        if user.first_seen is None or first < user.first_seen or \
                user.last_seen is None or last > user.last_seen:
            user.first_seen = min(first, user.first_seen or first)
            user.last_seen = max(last, user.last_seen or last)
            changed.append(user)
    if changed:
        changed.sort(key=lambda user: user.pk)
        EndUser.objects.bulk_update(changed, ["first_seen", "last_seen"], batch_size=500)
    return {uid: user.pk for uid, user in existing.items()}


def _ensure_items(item_ids: set[str]) -> dict[str, int]:
    if not item_ids:
        return {}
    pks = dict(Item.objects.filter(item_id__in=list(item_ids)).values_list("item_id", "id"))
    missing = sorted(item_ids - set(pks))  # key order: racing batches queue, not deadlock
    if missing:
        Item.objects.bulk_create([Item(item_id=i) for i in missing], ignore_conflicts=True)
        pks.update(Item.objects.filter(item_id__in=missing).values_list("item_id", "id"))
    return pks


ITEM_FIELDS = {"item_id", "title", "category", "tags", "attributes", "is_active"}
USER_FIELDS = {"user_id", "traits"}


def _parse_item(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise RowRejected("item", "Each item must be a JSON object.")
    unknown = set(raw) - ITEM_FIELDS
    if unknown:
        raise RowRejected(sorted(unknown)[0], "Unknown field.")
    parsed: dict[str, Any] = {"item_id": _external_id(raw.get("item_id"), "item_id", required=True)}
    for name, limit in (("title", 500), ("category", 255)):
        if name in raw:
            value = raw[name] if raw[name] is not None else ""
            if not isinstance(value, str) or len(value) > limit:
                raise RowRejected(name, f"Must be a string of at most {limit} characters.")
            parsed[name] = _storable_text(value, name)
    if "tags" in raw:
        tags = raw["tags"] if raw["tags"] is not None else []
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise RowRejected("tags", "Must be a list of strings.")
        parsed["tags"] = [_storable_text(tag, "tags") for tag in tags]
    if "attributes" in raw:
        parsed["attributes"] = (_properties(raw["attributes"], "attributes")
                                if raw["attributes"] else {})
    # null as left out (the schema allows it): a client sending every optional field
    # could otherwise upsert no item.
    if raw.get("is_active") is not None:
        if not isinstance(raw["is_active"], bool):
            raise RowRejected("is_active", "Must be true or false.")
        parsed["is_active"] = raw["is_active"]
    return parsed


def _parse_user(raw: Any) -> dict:
    if not isinstance(raw, dict):
        raise RowRejected("user", "Each user must be a JSON object.")
    unknown = set(raw) - USER_FIELDS
    if unknown:
        raise RowRejected(sorted(unknown)[0], "Unknown field.")
    traits = raw.get("traits") or {}
    if not isinstance(traits, dict):
        raise RowRejected("traits", "Must be a JSON object.")
    return {"user_id": _external_id(raw.get("user_id"), "user_id", required=True),
            "traits": _properties(traits, "traits")}


@transaction.atomic
def upsert_items(*, items: Sequence[Any]) -> BatchResult:
    """Creates or updates catalog items; fields left out of a row keep their stored value."""
    result = BatchResult()
    parsed: dict[str, dict] = {}
    for index, raw in enumerate(items):
        try:
            row = _parse_item(raw)
        except RowRejected as error:
            result.reject(index, error)
            continue
        parsed.setdefault(row["item_id"], {}).update(row)
    _ensure_items(set(parsed))
    # Locked (in key order: concurrent imports queue, not deadlock), so two imports
    # changing one item's category cannot both read the old one and leave no rollup mark.
    stored = {item.item_id: item for item in Item.objects.select_for_update()
              .filter(item_id__in=list(parsed)).order_by("item_id")}
    now = timezone.now()
    recategorised = []
    for item_id, row in parsed.items():
        item = stored[item_id]
        if "category" in row and row["category"] != item.category:
            recategorised.append(item.pk)
        for name, value in row.items():
            setattr(item, name, value)
        item.updated_at = now
    if stored:
        Item.objects.bulk_update(list(stored.values()), ["title", "category", "tags",
                                                         "attributes", "is_active", "updated_at"],
                                 batch_size=500)
    if recategorised:
        item_categories_changed.send(sender=Item, item_pks=recategorised)
    result.accepted = len(items) - result.rejected
    return result


@transaction.atomic
def upsert_users(*, users: Sequence[Any]) -> BatchResult:
    """Creates end users or merges the traits sent into the ones stored."""
    result = BatchResult()
    parsed: dict[str, dict] = {}
    rows_of: dict[str, list[int]] = {}
    for index, raw in enumerate(users):
        try:
            row = _parse_user(raw)
        except RowRejected as error:
            result.reject(index, error)
            continue
        parsed.setdefault(row["user_id"], {}).update(row["traits"])
        rows_of.setdefault(row["user_id"], []).append(index)
    EndUser.objects.bulk_create([EndUser(user_id=uid) for uid in sorted(parsed)],
                                ignore_conflicts=True)
    # Locked from read to write, so a concurrent request's traits are merged with these,
    # not overwritten by them; in user_id order, as _ensure_users locks them. The users
    # just created are locked before the rest, so a deadlock with another batch remains
    # possible: PostgreSQL ends one, which answers 503 and is retried.
    stored = {user.user_id: user for user in EndUser.objects.select_for_update()
              .filter(user_id__in=list(parsed)).order_by("user_id")}
    for user_id, traits in parsed.items():
        try:
            # The merged traits are held to the limit too: past it, every later $set or
            # identify from an SDK would be refused for this user.
            stored[user_id].traits = _properties({**_object(stored[user_id].traits),
                                                  **traits}, "traits")
        except RowRejected as error:
            for index in rows_of[user_id]:
                result.reject(index, error)
            del stored[user_id]
    if stored:
        EndUser.objects.bulk_update(list(stored.values()), ["traits"], batch_size=500)
    result.errors.sort(key=lambda row_error: row_error.index)
    result.accepted = len(users) - result.rejected
    return result


# SDK capture ----------------------------------------------------------------------------

# Key of the PostgreSQL advisory lock that makes identity merges take turns: they are rare
# (one per sign-in) and each must see the links the one before it wrote.
IDENTITY_MERGE_LOCK = 0x4C6F6465


def ingest_capture(*, batch: CaptureBatch, api_key: APIKey | None, protocol: str) -> BatchResult:
    """Stores what one PostHog or Segment request asked for: catalog fields, events, user
    traits and identity links. A bad event is counted, logged and kept as the key's
    recent reject; the rest are stored. Returns after everything is committed, so an SDK
    that gets an error retries a batch whose stored part it will be told are duplicates."""
    now = timezone.now()
    result = BatchResult()
    rejects = list(batch.rejects)
    result.rejected = len(batch.rejects)
    valid: list[EventInput] = []
    for raw, (index, name, message) in zip(batch.events, batch.event_sources, strict=True):
        try:
            valid.append(parse_event(raw, now=now))
        except RowRejected as error:
            result.reject(index, error)
            rejects.append(Reject(index=index, event_name=name, field=error.field,
                                  message=error.message, payload=payload_excerpt(message)))
    # Ids that cannot be stored are their events' rejects already; written to the catalog,
    # traits or links they would fail the whole request (PostgreSQL checks the lengths).
    catalog_rows = {item_id: row for item_id, row in batch.items.items() if storable_id(item_id)}
    traits, traits_once = ({user_id: sent for user_id, sent in chosen.items()
                            if storable_id(user_id)}
                           for chosen in (batch.traits, batch.traits_once))
    links = [(alias, person) for alias, person in batch.links
             if storable_id(alias) and storable_id(person)]
    catalog_pks = merge_catalog_fields(rows=catalog_rows) if catalog_rows else {}
    if valid:
        inserted = store_events(events=valid, received_at=None, item_pks=catalog_pks)
        result.accepted = len(inserted)
        result.duplicates = len(valid) - len(inserted)
    if traits or traits_once:
        merge_traits(traits=traits, traits_once=traits_once)
    if links:
        link_identities(links=links, linked_at=now)
    if rejects:
        record_capture_rejects(rejects=rejects, api_key=api_key, protocol=protocol,
                               created_at=now)
    return result


@transaction.atomic
def merge_catalog_fields(*, rows: dict[str, dict]) -> dict[str, int]:
    """Title, category and price from e-commerce events into the catalog; only values that
    differ are written (a hot item's every purchase would otherwise rewrite its row, queue
    concurrent batches behind its row lock and make every web process rebuild its catalog
    view). Stored rows are read as tuples, not model instances, in the same query that
    finds which items exist: this runs on most batches. Returns the items' primary keys."""
    columns = ("pk", "item_id", "title", "category", "attributes")
    stored = list(Item.objects.filter(item_id__in=list(rows)).values_list(*columns))
    missing = sorted(rows.keys() - {item_id for _, item_id, *_ in stored})
    if missing:  # key order: racing batches queue, not deadlock
        Item.objects.bulk_create([Item(item_id=i) for i in missing], ignore_conflicts=True)
        stored += Item.objects.filter(item_id__in=missing).values_list(*columns)
    if any(_merged_catalog_row(rows[item_id], title, category, attributes)
           != (title, category, attributes)
           for _, item_id, title, category, attributes in stored):
        # Written from a locked re-read (in key order, as upsert_items locks them): a
        # concurrent /items upsert or admin edit since the read above is merged, not
        # overwritten with what this batch read.
        now = timezone.now()
        changed, recategorised = [], []
        for pk, item_id, title, category, attributes in (
                Item.objects.select_for_update().filter(item_id__in=list(rows))
                .order_by("item_id").values_list(*columns)):
            new = _merged_catalog_row(rows[item_id], title, category, attributes)
            if new != (title, category, attributes):
                changed.append(Item(pk=pk, title=new[0], category=new[1], attributes=new[2],
                                    updated_at=now))
                if new[1] != category:
                    recategorised.append(pk)
        if changed:
            Item.objects.bulk_update(changed, ["title", "category", "attributes", "updated_at"],
                                     batch_size=500)
        if recategorised:
            item_categories_changed.send(sender=Item, item_pks=recategorised)
    return {item_id: pk for pk, item_id, *_ in stored}


def _merged_catalog_row(row: dict, title: str, category: str,
                        attributes: Any) -> tuple[str, str, Any]:
    """(title, category, attributes) once an event's catalog fields are merged in."""
    new_attributes = ({**_object(attributes), "price": row["price"]}
                      if "price" in row and _object(attributes).get("price") != row["price"]
                      else attributes)
    return row.get("title", title), row.get("category", category), new_attributes


@transaction.atomic
def merge_traits(*, traits: dict[str, dict], traits_once: dict[str, dict]) -> None:
    """Traits sent overwrite the stored ones; ``traits_once`` only fill keys not yet set."""
    user_ids = sorted(set(traits) | set(traits_once))
    EndUser.objects.bulk_create([EndUser(user_id=u) for u in user_ids], ignore_conflicts=True)
    changed = []
    # Locked from read to write, in user_id order, as in upsert_users.
    for user in (EndUser.objects.select_for_update().filter(user_id__in=user_ids)
                 .order_by("user_id")):
        merged = {**traits_once.get(user.user_id, {}), **_object(user.traits),
                  **traits.get(user.user_id, {})}
        if merged == user.traits:
            continue
        try:
            user.traits = _properties(merged)
        except RowRejected as error:
            logger.warning("Traits of %s not stored: %s", user.user_id, error.message)
            continue
        changed.append(user)
    if changed:
        EndUser.objects.bulk_update(changed, ["traits"], batch_size=500)


@transaction.atomic
def link_identities(*, links: Sequence[tuple[str, str]], linked_at: datetime) -> int:
    """Makes each ``(alias, person)`` pair one person, so the alias's events count as the
    person's for recommendations and analytics; no event is rewritten. Returns how many
    links were made.

    Retries and repeats change nothing. An id already linked to a different person stays
    with the first (PostHog's rule: a shared device must not merge two signed-in users).
    Merges take turns under one lock and re-read the links under it, so concurrent
    requests cannot leave a chain (a person that is itself an alias)."""
    pairs = list(dict.fromkeys((a, p) for a, p in links if a and p and a != p))
    if not pairs:
        return 0
    user_ids = sorted({uid for pair in pairs for uid in pair})
    EndUser.objects.bulk_create([EndUser(user_id=u) for u in user_ids], ignore_conflicts=True)
    pk_of = dict(EndUser.objects.filter(user_id__in=user_ids).values_list("user_id", "pk"))
    pk_pairs = [(pk_of[a], pk_of[p]) for a, p in pairs]

    def person_by_alias() -> dict[int, int]:
        return dict(IdentityLink.objects.filter(alias__in=list(pk_of.values()))
                    .values_list("alias_id", "person_id"))

    known = person_by_alias()
    if all(a in known or known.get(p) == a for a, p in pk_pairs):
        return 0  # the common case: an SDK repeating a link it already sent
    lock_until_commit(IDENTITY_MERGE_LOCK, sqlite_table_of=IdentityLink)
    known = person_by_alias()
    made = 0
    for alias, person in pk_pairs:
        root = known.get(person, person)
        if alias in known:
            if known[alias] != root:
                logger.info("Identity link %s -> %s refused: already linked to another person",
                            alias, person)
            continue
        if root == alias:
            continue
        IdentityLink.objects.filter(person_id=alias).update(person_id=root)
        known = {a: (root if p == alias else p) for a, p in known.items()}
        IdentityLink.objects.create(alias_id=alias, person_id=root, linked_at=linked_at)
        known[alias] = root
        _widen_seen(person_pk=root, alias_pk=alias)
        made += 1
    return made


def _widen_seen(*, person_pk: int, alias_pk: int) -> None:
    """The person was first seen when any of its ids was (a visit before signing in makes
    the person new that day, once)."""
    alias = EndUser.objects.filter(pk=alias_pk).values("first_seen", "last_seen").get()
    person = EndUser.objects.select_for_update().get(pk=person_pk)
    stamps = [(person.first_seen, alias["first_seen"]), (person.last_seen, alias["last_seen"])]
    first = min((t for t in stamps[0] if t is not None), default=None)
    last = max((t for t in stamps[1] if t is not None), default=None)
    if (first, last) != (person.first_seen, person.last_seen):
        person.first_seen, person.last_seen = first, last
        person.save(update_fields=["first_seen", "last_seen"])


def record_capture_rejects(*, rejects: Sequence[Reject], api_key: APIKey | None,
                           protocol: str, created_at: datetime) -> None:
    for reject in rejects:
        logger.warning("%s event %r rejected (%s: %s)", protocol, reject.event_name,
                       reject.field, reject.message)
    with transaction.atomic():
        CaptureReject.objects.bulk_create([
            CaptureReject(api_key=api_key, protocol=protocol, event_name=r.event_name,
                          field=r.field[:64], message=r.message[:500], payload=r.payload,
                          created_at=created_at)
            for r in rejects[-CaptureReject.KEEP_PER_KEY:]])
        stale = list(CaptureReject.objects.filter(api_key=api_key)
                     .order_by("-created_at", "-id")
                     .values_list("id", flat=True)[CaptureReject.KEEP_PER_KEY:])
        if stale:
            CaptureReject.objects.filter(id__in=stale).delete()
