"""PostHog's capture protocol (``/batch/``, ``/capture/``, ``/e/``, ``/i/v0/e/``) as the
``posthog`` Python library and posthog-js send it.

Identity: ``$identify`` links ``$anon_distinct_id`` to the event's ``distinct_id``;
``$create_alias`` links the event's ``distinct_id`` (the previous id) to ``alias``.
``$set`` and ``$set_once`` in any event's properties become user traits.

Cookieless mode (posthog-js's ``cookieless_mode``, for visitors who refused cookies) sends
every visitor's events as ``$posthog_cookieless``; as PostHog's own server does, each is
given an id of its own, a keyed hash of the day, the client app's key and the visitor's
address (config.client_address) and browser (``cookieless_visitor_id``), so a visitor is one
user for a day and the first to sign in does not take over everyone's history."""

import hashlib
import hmac
from datetime import datetime
from typing import Any

from django.conf import settings

from ingestion.capture.mapping import (
    CaptureBatch,
    corrected_timestamp,
    event_type_table,
    event_uuid,
    json_objects,
    native_events,
    parse_time,
)

PROTOCOL = "posthog"
PAGE_EVENTS = ("$pageview", "$screen")
# Sent by the SDKs for PostHog itself; kept out of the stored properties (the token is the
# client app's key).
DROPPED_PROPERTIES = frozenset(("token", "api_key", "$set", "$set_once", "distinct_id"))
COOKIELESS_ID = "$posthog_cookieless"


def cookieless_visitor_id(*, key_id: Any, address: str, user_agent: str, day: str) -> str:
    """The id a cookieless visitor's events are stored under: the same all day for one
    address and browser, unguessable from them without SECRET_KEY, new each day."""
    digest = hmac.new(settings.SECRET_KEY.encode(), "\n".join(
        ("cookieless", day, str(key_id), address, user_agent)).encode(), hashlib.sha256)
    return f"cookieless-{digest.hexdigest()[:32]}"


def messages_of(payload: Any) -> tuple[list, Any]:
    """The events of a body and the batch's ``sent_at``: ``{"batch": [...]}`` (the Python
    library), a list or a single event (posthog-js)."""
    if isinstance(payload, list):
        return payload, None
    if isinstance(payload, dict):
        if "batch" in payload:
            batch = payload["batch"]
            return (batch if isinstance(batch, list) else [batch]), payload.get("sent_at")
        return [payload], payload.get("sent_at")
    return [payload], None


def key_of(payload: Any, messages: list) -> str | None:
    """The project key: the body's ``api_key``/``token``, else the first event's."""
    candidates = [payload] if isinstance(payload, dict) else []
    for message in messages[:1]:
        if isinstance(message, dict):
            candidates.append(message)
            if isinstance(message.get("properties"), dict):
                candidates.append(message["properties"])
    for source in candidates:
        for name in ("api_key", "token"):
            if isinstance(source.get(name), str) and source[name]:
                return source[name]
    return None


def translate(messages: list, *, sent_at: Any, now: datetime,
              cookieless_visitor: str | None = None) -> CaptureBatch:
    """`cookieless_visitor`: the id of the visitor who sent the request, for its events
    sent as COOKIELESS_ID (without one, where the visitor's address is not known, they
    are rejects)."""
    batch = CaptureBatch()
    types = event_type_table()
    sent_at = parse_time(sent_at)  # once per batch, not per message
    for index, message in json_objects(messages, batch):
        name = message.get("event")
        if not isinstance(name, str) or not name:
            batch.reject(index, message, field_name="event", reason="The event has no name.")
            continue
        properties = message.get("properties") if isinstance(message.get("properties"),
                                                             dict) else {}
        user_id = message.get("distinct_id") or properties.get("distinct_id") \
            or properties.get("$distinct_id")
        if not isinstance(user_id, (str, int)) or isinstance(user_id, bool) or \
                not str(user_id).strip():
            batch.reject(index, message, field_name="distinct_id",
                         reason="The event has no distinct_id.")
            continue
        user_id = str(user_id).strip()
        if user_id == COOKIELESS_ID:
            if cookieless_visitor is None:
                batch.reject(index, message, field_name="distinct_id",
                             reason="A cookieless event whose visitor's address is unknown.")
                continue
            user_id = cookieless_visitor
        if name == "$identify" and properties.get("$anon_distinct_id"):
            anonymous = str(properties["$anon_distinct_id"])
            if anonymous == COOKIELESS_ID:
                anonymous = cookieless_visitor or anonymous
            if anonymous != COOKIELESS_ID:
                batch.links.append((anonymous, user_id))
        elif name == "$create_alias" and properties.get("alias"):
            batch.links.append((user_id, str(properties["alias"])))
        # The Python library sends $set beside the properties, posthog-js inside them.
        for source in (message, properties):
            if "$set" in source:
                batch.set_traits(user_id, source["$set"])
            if "$set_once" in source:
                batch.set_traits(user_id, source["$set_once"], once=True)
        native_events(
            batch=batch, index=index, message=message, name=name,
            event_id=event_uuid(message.get("uuid"), protocol=PROTOCOL, message=message,
                                user_id=user_id),
            user_id=user_id,
            timestamp=corrected_timestamp(timestamp=message.get("timestamp"),
                                          sent_at=message.get("sent_at") or sent_at,
                                          offset_ms=message.get("offset"), now=now),
            properties=({k: v for k, v in properties.items() if k not in DROPPED_PROPERTIES}
                        if DROPPED_PROPERTIES.intersection(properties) else properties),
            page_like=name in PAGE_EVENTS, types=types)
    return batch
