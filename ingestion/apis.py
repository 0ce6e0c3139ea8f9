from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import CanSendEvents, IsClientApp
from config.api import EventRateThrottle
from config.request_shapes import require_shape
from ingestion.services import ingest_events, upsert_items, upsert_users


class BatchResultSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField(required=False)
    rejected = serializers.IntegerField()
    errors = inline_serializer("RowError", fields={
        "index": serializers.IntegerField(),
        "field": serializers.CharField(),
        "message": serializers.CharField(),
    }, many=True)


# Ids, texts and types are checked per row (1-255 characters, required where they are):
# a missing or over-long one is a per-row error beside the stored rows, not a refused batch.
_ID = {"anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True,
       "description": "1 to 255 characters (checked per row)"}


def _text(description: str, **extra) -> dict:
    return {"type": "string", "nullable": True, "description": description, **extra}


EVENT_SCHEMA = {
    "type": "object",
    "required": ["type"],
    # A body with "batch" is a batch (EVENT_BATCH_SCHEMA), never a single event.
    "not": {"required": ["batch"]},
    "description": "`user_id` is required (checked per event, as are the rules below). Rules beyond these types are checked per event and reported in the "
                   "reply's `errors` (the other events are stored): `type` is 1-64 printable "
                   "characters (spaces at either end trimmed), no comma; `item_id` is "
                   "required for view, click, add_to_cart, purchase, rating and review; "
                   "`timestamp` is ISO 8601 with a UTC offset, from 1970, at most 24 h ahead; "
                   "a rating's or review's `value` is 0.5-5, a purchase's is not negative; "
                   "`properties` at most 32 KB as JSON; no other fields.",
    "properties": {
        "event_id": _text("UUID; the idempotency key (generated when absent)"),
        "type": {"type": "string", "nullable": True, "description": "view, click, add_to_cart, purchase, "
                                                  "rating, review, or a custom name"},
        "user_id": _ID,
        "item_id": _ID,
        "timestamp": _text("ISO 8601 date-time with offset; default now"),
        "value": {"type": "number", "nullable": True,
                  "description": "Rating 0.5-5 (half stars), or purchase amount; any value "
                                 "from -1e15 to 1e15 (checked per event)"},
        "text": _text("Review text, at most 5,000 characters (checked per event); a "
                      "review's headline goes in `properties.review_title`, which sentiment "
                      "reads before the text (a review or rating is scored when it has text or a "
                      "headline)"),
        "properties": {"type": "object", "nullable": True},
        "rec_id": _text("UUID of the recommendation response this event came from"),
    },
}


def _batch_of(key: str, row: dict) -> dict:
    return {"type": "object", "required": [key], "properties": {key: {
        "type": "array", "minItems": 1, "maxItems": settings.INGEST_MAX_BATCH, "items": row}}}


EVENT_BATCH_SCHEMA = _batch_of("batch", EVENT_SCHEMA)
ITEM_SCHEMA = {
    "type": "object",
    "description": "`item_id` is required (checked per row). Fields left out keep their stored value; `attributes` at most 8 KB as "
                   "JSON; no other fields (checked per row).",
    "properties": {
        "item_id": _ID,
        "title": _text("Shown with recommendations; at most 500 characters"),
        "category": _text("Used by category filters; at most 255 characters"),
        "tags": {"type": "array", "nullable": True, "items": {"type": "string"}},
        "attributes": {"type": "object", "nullable": True},
        "is_active": {"type": "boolean", "nullable": True,
                      "description": "false: never recommended; null keeps the stored value "
                                     "(a new item is active)"},
    },
}
USER_SCHEMA = {
    "type": "object",
    "description": "`user_id` is required (checked per row). `traits` are merged into the stored ones, at most 8 KB as JSON; no "
                   "other fields (checked per row).",
    "properties": {"user_id": _ID, "traits": {"type": "object", "nullable": True}},
}
ITEM_BATCH_SCHEMA = _batch_of("items", ITEM_SCHEMA)
USER_BATCH_SCHEMA = _batch_of("users", USER_SCHEMA)


def _rows(data, schema: dict, key: str) -> list:
    require_shape(data, schema)
    return data[key]


class EventIngestApi(APIView):
    permission_classes = [CanSendEvents]
    throttle_classes = [EventRateThrottle]

    @extend_schema(
        operation_id="events_ingest",
        request={"application/json": {"anyOf": [EVENT_SCHEMA, EVENT_BATCH_SCHEMA]}},
        responses={200: BatchResultSerializer},
        description="One event object, or `{\"batch\": [...]}` with up to 1,000 events "
                    "(body up to 5 MB). Events with an `event_id` already stored count as "
                    "duplicates and are not stored again. The response is sent after the "
                    "accepted events are committed.",
        examples=[OpenApiExample("batch", value={"batch": [
            {"type": "view", "user_id": "u1", "item_id": "sku-1",
             "timestamp": "2026-01-31T12:00:00Z"}]}, request_only=True)],
    )
    def post(self, request):
        data = request.data
        if isinstance(data, dict) and "batch" in data:
            rows = _rows(data, EVENT_BATCH_SCHEMA, "batch")
        else:
            require_shape(data, EVENT_SCHEMA)
            rows = [data]
        return Response(ingest_events(events=rows).as_dict())


class ItemUpsertApi(APIView):
    permission_classes = [IsClientApp]

    @extend_schema(
        operation_id="items_upsert",
        request={"application/json": ITEM_BATCH_SCHEMA},
        responses={200: BatchResultSerializer},
        description="Create or update up to 1,000 catalog items; fields left out keep their "
                    "stored value. Set `is_active: false` to stop recommending an item.",
    )
    def post(self, request):
        rows = _rows(request.data, ITEM_BATCH_SCHEMA, "items")
        result = upsert_items(items=rows).as_dict()
        result.pop("duplicates")
        return Response(result)


class UserUpsertApi(APIView):
    permission_classes = [IsClientApp]

    @extend_schema(
        operation_id="users_upsert",
        request={"application/json": USER_BATCH_SCHEMA},
        responses={200: BatchResultSerializer},
        description="Create up to 1,000 end users or merge the traits sent into stored ones.",
    )
    def post(self, request):
        rows = _rows(request.data, USER_BATCH_SCHEMA, "users")
        result = upsert_users(users=rows).as_dict()
        result.pop("duplicates")
        return Response(result)
