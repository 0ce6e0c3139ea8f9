"""What PostHog and Segment messages share on their way to Lodestar's events.

The table (README, "Already using PostHog or Segment?"): event names in
``settings.CAPTURE_EVENT_TYPES`` (Segment's e-commerce spec v2, which PostHog's
e-commerce events follow too; matched ignoring case, spaces and underscores alike) become
Lodestar's item event types when the event names an item (``product_id``, then ``sku``);
``Order Completed`` becomes one purchase per product (value = price × quantity, order id
kept); a page view or screen that names a product is a view. Every other event keeps its
own name and properties, so trends and funnels can use it.
"""

import functools
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from django.conf import settings

from ingestion.models import HIGHEST_RATING, ITEM_EVENT_TYPES, LOWEST_RATING, MAX_EVENT_VALUE

# Seconds or milliseconds since the epoch as digits (posthog-js's `_`), as PostHog reads
# them; bounded, so a long run of digits is not a number to convert.
_EPOCH_DIGITS = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,6})?")
# uuid5 namespace of the ids derived for SDK messages that carry none, or a non-UUID one.
CAPTURE_ID_NAMESPACE = uuid.UUID("6f0f2c52-61a4-4f6b-9c8e-3b7d2f0a9e11")
PURCHASE = "purchase"
VIEW = "view"
REVIEW = "review"
RATING = "rating"
MAX_REJECT_PAYLOAD_CHARS = 2048


@dataclass(frozen=True, slots=True)
class Reject:
    index: int
    event_name: str
    field: str
    message: str
    payload: str


@dataclass
class CaptureBatch:
    """An SDK request translated: native events (``ingestion.services.parse_event``'s
    input) and what else it asked for. ``event_sources`` gives, per native event, the
    index and name of the SDK message it came from (for the rejects' log)."""

    events: list[dict] = field(default_factory=list)
    event_sources: list[tuple[int, str, Any]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (alias, person) user ids
    traits: dict[str, dict] = field(default_factory=dict)
    traits_once: dict[str, dict] = field(default_factory=dict)
    items: dict[str, dict] = field(default_factory=dict)
    rejects: list[Reject] = field(default_factory=list)

    def reject(self, index: int, message: Any, *, field_name: str, reason: str) -> None:
        name = (message.get("event") or message.get("type") or "") if isinstance(message, dict) \
            else ""
        self.rejects.append(Reject(index=index, event_name=storable_text(str(name)[:255]),
                                   field=field_name, message=reason,
                                   payload=payload_excerpt(message)))

    def add_event(self, index: int, message: Any, event: dict) -> None:
        self.events.append(event)
        self.event_sources.append((index, storable_text(str(event.get("type", ""))[:255]),
                                   message))

    def add_catalog_row(self, item_id: str, properties: dict) -> None:
        row = catalog_row(properties)
        if row:  # most events name the item only: nothing to write to the catalog
            self.items.setdefault(item_id, {}).update(row)

    def set_traits(self, user_id: str, traits: Any, *, once: bool = False) -> None:
        if not isinstance(traits, dict) or not traits:
            return
        if once:  # the first value sent is kept, within a batch as across batches
            stored = self.traits_once.setdefault(user_id, {})
            for key, value in traits.items():
                stored.setdefault(key, value)
        else:
            self.traits.setdefault(user_id, {}).update(traits)


def json_objects(messages: list, batch: CaptureBatch) -> Iterator[tuple[int, dict]]:
    """The messages that are JSON objects, with their index; the others are rejects."""
    for index, message in enumerate(messages):
        if isinstance(message, dict):
            yield index, message
        else:
            batch.reject(index, message, field_name="event",
                         reason="Each message must be a JSON object.")


def payload_excerpt(message: Any) -> str:
    try:
        text = json.dumps(message, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(message)
    return storable_text(text[:MAX_REJECT_PAYLOAD_CHARS])


def storable_text(text: str) -> str:
    """The text with what a database column cannot hold (a NUL, half of a UTF-16 surrogate
    pair) written as its escape: a reject's record must keep what made the event a reject."""
    return text.replace("\x00", "\\u0000").encode("utf-8", "backslashreplace").decode("utf-8")


def fits_a_text_column(text: str) -> bool:
    """Whether the database can store the text as it is (no NUL, no lone surrogate)."""
    return storable_text(text) == text


@functools.lru_cache(maxsize=4096)  # a shop sends a few dozen distinct event names
def _normalised_name(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


@functools.lru_cache(maxsize=4)
def _type_table(items: tuple[tuple[str, str], ...]) -> dict[str, str]:
    # Lodestar's own item event types stand for themselves (`capture("purchase",
    # {"product_id": ...})`), unless the table maps the name elsewhere.
    table = {_normalised_name(kind): kind for kind in ITEM_EVENT_TYPES}
    table.update({_normalised_name(name): kind for name, kind in items})
    return table


def event_type_table() -> dict[str, str]:
    """settings.CAPTURE_EVENT_TYPES by normalised name; read once per request."""
    return _type_table(tuple(settings.CAPTURE_EVENT_TYPES.items()))


def mapped_type(event_name: str, table: dict[str, str]) -> str | None:
    return table.get(_normalised_name(event_name))


# A message's own time: with one, a message without an id is told apart by its content.
OWN_TIME_FIELDS = ("timestamp", "originalTimestamp")
# What a resend of the same message changes: left out of the content an id is derived from.
TRANSPORT_FIELDS = frozenset(("sentAt", "sent_at", "writeKey", "api_key", "token", "offset"))


def event_uuid(raw_id: Any, *, protocol: str, message: Any, user_id: str) -> uuid.UUID:
    """The SDK's own id where it is a UUID; a stable id derived from it otherwise, so a
    retried message maps to the same event. Without an id, one derived from a message's
    content and its user (resolved: posthog-js's cookieless visitors share one
    distinct_id) where it carries its own time, less what a resend changes; a message with
    neither is a new event each time it arrives: the same "logged_in" sent today and
    tomorrow (PostHog's own curl example) was stored once, the second taken as a retry."""
    if isinstance(raw_id, str) and raw_id:
        try:
            return uuid.UUID(raw_id)
        except ValueError:
            return uuid.uuid5(CAPTURE_ID_NAMESPACE, f"{protocol}:{raw_id}")
    if not isinstance(message, dict) or not any(message.get(key) for key in OWN_TIME_FIELDS):
        return uuid.uuid4()
    content = {key: value for key, value in message.items() if key not in TRANSPORT_FIELDS}
    canonical = json.dumps(content, sort_keys=True, default=str, separators=(",", ":"))
    return uuid.uuid5(CAPTURE_ID_NAMESPACE, f"{protocol}:{user_id}:{canonical}")


def parse_time(raw: Any) -> datetime | None:
    """An SDK's ISO 8601 time (naive ones are UTC, as the SDKs mean them), or seconds or
    milliseconds since the epoch as a number or its digits; None if absent or unreadable."""
    if isinstance(raw, str) and _EPOCH_DIGITS.fullmatch(raw):
        raw = float(raw)
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        try:
            return datetime.fromtimestamp(raw / 1000 if raw > 1e11 else raw, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(raw, str) or not raw:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def corrected_timestamp(*, timestamp: Any, sent_at: Any, offset_ms: Any,
                        now: datetime) -> datetime:
    """When the event happened by the server's clock, as PostHog and Segment compute it:
    the SDK's timestamp moved by the skew between its clock at sending (``sent_at``) and
    ours at receipt; else now minus the ``offset`` in milliseconds the SDK reports; else
    the SDK's timestamp as sent; else now."""
    happened = parse_time(timestamp)
    sent = sent_at if isinstance(sent_at, datetime) else parse_time(sent_at)
    # A correction past the calendar's ends (an offset of 1e15 ms, a timestamp of year 1
    # with today's sent_at) is no correction: the timestamp as sent, which parse_event
    # then judges, else now.
    try:
        if happened is not None and sent is not None:
            return now - (sent - happened)
        if isinstance(offset_ms, (int, float)) and not isinstance(offset_ms, bool):
            return now - timedelta(milliseconds=float(offset_ms))
    except (OverflowError, ValueError):
        pass
    return happened or now


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool) or raw is None or raw == "":
        return None
    try:
        return float(raw)
    except (TypeError, ValueError, OverflowError):  # Overflow: hundreds of digits
        return None


def item_id_of(properties: dict) -> str | None:
    for key in ("product_id", "sku"):
        value = properties.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and str(value).strip():
            return str(value).strip()
    return None


def catalog_row(properties: dict) -> dict:
    """The catalog fields an e-commerce event carries: title (``name``), category, price."""
    row: dict[str, Any] = {}
    name = properties.get("name") or properties.get("title")
    # A name or category no column can hold (a NUL, a lone surrogate) is left out.
    if isinstance(name, str) and name.strip() and fits_a_text_column(name):
        row["title"] = name.strip()[:500]
    category = properties.get("category")
    if isinstance(category, str) and category.strip() and fits_a_text_column(category):
        row["category"] = category.strip()[:255]
    price = _number(properties.get("price"))
    # A price a purchase would be refused for (negative, or past any amount) is left out too.
    if price is not None and 0 <= price <= MAX_EVENT_VALUE:
        row["price"] = price
    return row


def rec_id_of(properties: dict) -> uuid.UUID | None:
    """``rec_id`` where it is a UUID; a malformed one stays only in the properties, so a
    purchase is never lost over its attribution."""
    raw = properties.get("rec_id")
    if isinstance(raw, str):
        try:
            return uuid.UUID(raw)
        except ValueError:
            return None
    return None


def native_events(*, batch: CaptureBatch, index: int, message: Any, name: str,
                  event_id: uuid.UUID, user_id: Any, timestamp: datetime,
                  properties: dict, page_like: bool, types: dict[str, str]) -> None:
    """Adds the Lodestar events one SDK event becomes, and its catalog rows."""
    base = {"user_id": user_id, "timestamp": timestamp, "rec_id": rec_id_of(properties)}
    kind = VIEW if page_like and item_id_of(properties) else mapped_type(name, types)
    if kind == PURCHASE and isinstance(properties.get("products"), list) and \
            properties["products"]:
        order = {k: v for k, v in properties.items() if k != "products"}
        for position, product in enumerate(properties["products"]):
            product = product if isinstance(product, dict) else {}
            item_id = item_id_of(product)
            price = _number(product.get("price"))
            quantity = _number(product.get("quantity"))
            value = None if price is None else price * (1.0 if quantity is None else quantity)
            if item_id is not None:
                batch.add_catalog_row(item_id, product)
            batch.add_event(index, message, {
                **base, "event_id": uuid.uuid5(event_id, str(position)), "type": PURCHASE,
                "item_id": item_id, "value": value,
                "properties": {**product, **{k: order[k] for k in ("order_id", "currency",
                                                                   "checkout_id") if k in order}},
                "rec_id": rec_id_of(product) or base["rec_id"]})
        return
    item_id = item_id_of(properties) if kind else None
    if item_id is None:  # not an e-commerce event, or one naming no item: keeps its name
        batch.add_event(index, message, {**base, "event_id": event_id, "type": name,
                                         "properties": properties})
        return
    if not page_like:  # a page's name is the page's, not the product's
        batch.add_catalog_row(item_id, properties)
    event = {**base, "event_id": event_id, "type": kind, "item_id": item_id,
             "properties": properties}
    if kind == PURCHASE:
        event["value"] = _number(properties.get("revenue") or properties.get("total")
                                 or properties.get("price"))
    elif kind == RATING:
        event["value"] = _number(properties.get("rating"))
    elif kind == REVIEW:
        rating = _number(properties.get("rating"))
        # A rating off Lodestar's scale (a 0-10 widget, a typo) would make the review a
        # reject and its text lost to sentiment: the rating stays a property only.
        event["value"] = (rating if rating is not None
                          and LOWEST_RATING <= rating <= HIGHEST_RATING else None)
        body = properties.get("review_body") or properties.get("text") or ""
        event["text"] = body if isinstance(body, str) else ""
    batch.add_event(index, message, event)
