"""Segment's HTTP tracking API (``/v1/batch`` and the single-call paths) as
analytics-python and the other Segment libraries send it.

Every message is stored under ``userId``, else ``anonymousId``; a message carrying both
links the anonymous id to the user (as Segment's identity resolution does), and
``alias`` links ``previousId`` to ``userId``. ``identify`` traits and ``group`` (as the
traits ``group_id`` and ``group_traits``) are stored on the user, not as events."""

from datetime import datetime
from typing import Any

from ingestion.capture.mapping import (
    CaptureBatch,
    corrected_timestamp,
    event_type_table,
    event_uuid,
    json_objects,
    native_events,
    parse_time,
)

PROTOCOL = "segment"
MESSAGE_TYPES = ("track", "identify", "page", "screen", "alias", "group")


def messages_of(payload: Any, *, message_type: str | None) -> tuple[list, Any]:
    """``/v1/batch``'s ``{"batch": [...]}``, or the single message of ``/v1/<type>``."""
    if message_type is None:
        if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
            return payload["batch"], payload.get("sentAt")
        return [payload], None
    if isinstance(payload, dict):
        return [{**payload, "type": payload.get("type") or message_type}], payload.get("sentAt")
    return [payload], None


def translate(messages: list, *, sent_at: Any, now: datetime) -> CaptureBatch:
    batch = CaptureBatch()
    types = event_type_table()
    sent_at = parse_time(sent_at)  # once per batch, not per message
    for index, message in json_objects(messages, batch):
        kind = message.get("type")
        if kind not in MESSAGE_TYPES:
            batch.reject(index, message, field_name="type",
                         reason=f"type must be one of {', '.join(MESSAGE_TYPES)}.")
            continue
        user_id, anonymous_id = (_id(message.get("userId")), _id(message.get("anonymousId")))
        if kind == "alias":
            previous_id = _id(message.get("previousId"))
            if previous_id is None or user_id is None:
                batch.reject(index, message, field_name="previousId",
                             reason="alias needs previousId and userId.")
            else:
                batch.links.append((previous_id, user_id))
            continue
        who = user_id or anonymous_id
        if who is None:
            batch.reject(index, message, field_name="userId",
                         reason="The message has neither userId nor anonymousId.")
            continue
        if user_id and anonymous_id and anonymous_id != user_id:
            batch.links.append((anonymous_id, user_id))
        if kind == "identify":
            batch.set_traits(who, message.get("traits"))
            continue
        if kind == "group":
            group_id = _id(message.get("groupId"))
            if group_id is None:
                batch.reject(index, message, field_name="groupId", reason="group needs groupId.")
                continue
            traits = message.get("traits") if isinstance(message.get("traits"), dict) else {}
            batch.set_traits(who, {"group_id": group_id, "group_traits": traits})
            continue
        properties = message.get("properties") if isinstance(message.get("properties"),
                                                             dict) else {}
        if kind == "track":
            name = message.get("event")
            if not isinstance(name, str) or not name:
                batch.reject(index, message, field_name="event",
                             reason="track needs an event name.")
                continue
        else:
            name = kind
            if isinstance(message.get("name"), str) and "name" not in properties:
                properties = {**properties, "name": message["name"]}
        native_events(
            batch=batch, index=index, message=message, name=name,
            event_id=event_uuid(message.get("messageId"), protocol=PROTOCOL, message=message,
                                user_id=who),
            user_id=who,
            timestamp=corrected_timestamp(timestamp=message.get("timestamp")
                                          or message.get("originalTimestamp"),
                                          sent_at=message.get("sentAt") or sent_at,
                                          offset_ms=None, now=now),
            properties=properties, page_like=kind in ("page", "screen"), types=types)
    return batch


def _id(raw: Any) -> str | None:
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return None
    text = str(raw).strip()
    return text or None
