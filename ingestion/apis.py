from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsClientApp
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


def _rows_from_body(data, *, key: str, single_allowed: bool) -> list:
    """The body is `{"<key>": [...]}` or, where allowed, one object; anything else is a 400."""
    if isinstance(data, dict) and key in data:
        rows = data[key]
        if not isinstance(rows, list):
            raise serializers.ValidationError({key: "Must be a list."})
        if not rows:
            raise serializers.ValidationError({key: "Must not be empty."})
        if len(rows) > settings.INGEST_MAX_BATCH:
            raise serializers.ValidationError(
                {key: f"At most {settings.INGEST_MAX_BATCH} rows per request."})
        return rows
    if single_allowed and isinstance(data, dict):
        return [data]
    expected = f'one object or {{"{key}": [...]}}' if single_allowed else f'{{"{key}": [...]}}'
    raise serializers.ValidationError(f"The body must be {expected}.")


class EventIngestApi(APIView):
    permission_classes = [IsClientApp]

    class EventInputSerializer(serializers.Serializer):
        """Documents one event; validation runs in ingestion.services.parse_event."""

        event_id = serializers.UUIDField(required=False,
                                         help_text="Idempotency key; generated when absent")
        type = serializers.CharField(help_text="view, click, add_to_cart, purchase, rating, "
                                               "review, or a custom name")
        user_id = serializers.CharField()
        item_id = serializers.CharField(required=False,
                                        help_text="Required for the six item event types")
        timestamp = serializers.DateTimeField(required=False,
                                              help_text="ISO 8601 with offset; default now")
        value = serializers.FloatField(required=False,
                                       help_text="Rating 1-5, or purchase amount")
        text = serializers.CharField(required=False, max_length=5000)
        properties = serializers.DictField(required=False)
        rec_id = serializers.UUIDField(required=False)

    @extend_schema(
        operation_id="events_ingest",
        request=EventInputSerializer,
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
        rows = _rows_from_body(request.data, key="batch", single_allowed=True)
        return Response(ingest_events(events=rows).as_dict())


class ItemUpsertApi(APIView):
    permission_classes = [IsClientApp]

    class ItemInputSerializer(serializers.Serializer):
        item_id = serializers.CharField()
        title = serializers.CharField(required=False)
        category = serializers.CharField(required=False)
        tags = serializers.ListField(child=serializers.CharField(), required=False)
        attributes = serializers.DictField(required=False)
        is_active = serializers.BooleanField(required=False)

    @extend_schema(
        operation_id="items_upsert",
        request=inline_serializer("ItemBatch", fields={"items": ItemInputSerializer(many=True)}),
        responses={200: BatchResultSerializer},
        description="Create or update up to 1,000 catalog items; fields left out keep their "
                    "stored value. Set `is_active: false` to stop recommending an item.",
    )
    def post(self, request):
        rows = _rows_from_body(request.data, key="items", single_allowed=False)
        result = upsert_items(items=rows).as_dict()
        result.pop("duplicates")
        return Response(result)


class UserUpsertApi(APIView):
    permission_classes = [IsClientApp]

    class UserInputSerializer(serializers.Serializer):
        user_id = serializers.CharField()
        traits = serializers.DictField(required=False)

    @extend_schema(
        operation_id="users_upsert",
        request=inline_serializer("UserBatch", fields={"users": UserInputSerializer(many=True)}),
        responses={200: BatchResultSerializer},
        description="Create up to 1,000 end users or merge the traits sent into stored ones.",
    )
    def post(self, request):
        rows = _rows_from_body(request.data, key="users", single_allowed=False)
        result = upsert_users(users=rows).as_dict()
        result.pop("duplicates")
        return Response(result)
