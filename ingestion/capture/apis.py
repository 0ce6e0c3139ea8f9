"""The PostHog and Segment endpoints. Thin: read the body, find the key, translate, store.

Status codes are the ones the SDKs' retry logic keys off: 200 stored (per-event rejects
included), 400 unreadable body, 401 missing or bad key, 413 over the size cap, 429 over the
rate limit (503 with ``Retry-After`` on the PostHog endpoints: posthog-js drops a 429) and
503 with ``Retry-After`` while the database is unavailable (both retried by the SDKs).
Browser SDKs post from the shop's own origin, so every capture endpoint answers CORS
preflights; no cookie is read, so any origin may send."""

import base64
import binascii

from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import verify_api_key
from accounts.permissions import CanSendEvents
from config.api import EventRateThrottle
from config.client_address import client_address
from config.request_shapes import require_shape
from ingestion.capture import bodies, posthog, segment
from ingestion.capture.mapping import parse_time
from ingestion.services import ingest_capture

CORS_MAX_AGE_SECONDS = 86400
# Each message is checked on its own (a bad one is a reject, the rest are stored); only a
# body that is not a batch at all is refused whole.
POSTHOG_BODY_SCHEMA = {"anyOf": [{"type": "object"}, {"type": "array"}],
                       "description": "`{\"api_key\", \"batch\": [...]}`, a list of events, "
                                      "or one event"}
SEGMENT_BODY_SCHEMA = {"type": "object", "properties": {"batch": {"type": "array"}},
                       "description": "`{\"batch\": [...]}` (/v1/batch) or one message"}


def _raw_body(request) -> bytes:
    django_request = request._request
    meta = django_request.META
    if "chunked" in meta.get("HTTP_TRANSFER_ENCODING", "").lower() and meta.get(
            "wsgi.input_terminated"):
        # Segment's Android and Kotlin libraries stream gzip without a Content-Length;
        # Django reads such a body as empty, while the server (gunicorn) ends the raw
        # input where the chunks end.
        return bodies.read_limited(meta["wsgi.input"], declared_length=0)
    return bodies.read_limited(django_request,
                               declared_length=int(meta.get("CONTENT_LENGTH") or 0))


def _payload(request, decode):
    """The decoded body, read once per request (authentication needs the key inside it)."""
    django_request = request._request
    if not hasattr(django_request, "capture_payload"):
        django_request.capture_payload = decode(_raw_body(request), django_request.META)
    return django_request.capture_payload


def _posthog_payload(request):
    return _payload(request, lambda raw, meta: bodies.decode_posthog(
        raw, content_type=meta.get("CONTENT_TYPE", ""),
        content_encoding=meta.get("HTTP_CONTENT_ENCODING", ""),
        compression=request.query_params.get("compression", "")))


def _segment_payload(request):
    return _payload(request, lambda raw, meta: bodies.decode_segment(
        raw, content_encoding=meta.get("HTTP_CONTENT_ENCODING", "")))


class PostHogKeyAuthentication(BaseAuthentication):
    """The project key PostHog SDKs send: ``api_key`` or ``token`` in the body (or in the
    first event's properties), else ``Authorization: Bearer <key>``."""

    def authenticate(self, request):
        if request.method == "OPTIONS":
            return None
        payload = _posthog_payload(request)
        messages, _ = posthog.messages_of(payload)
        key = posthog.key_of(payload, messages)
        if key is None:
            scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
            key = value if scheme.lower() == "bearer" else None
        if not key:
            return None
        return (None, verify_api_key(key))

    def authenticate_header(self, request):
        return 'Bearer realm="lodestar"'


class SegmentWriteKeyAuthentication(BaseAuthentication):
    """The write key as the HTTP Basic user name (Segment's server libraries), else the
    body's ``writeKey`` (analytics.js)."""

    def authenticate(self, request):
        if request.method == "OPTIONS":
            return None
        scheme, _, value = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        key = None
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = None
        if not key:
            payload = _segment_payload(request)
            key = payload.get("writeKey") if isinstance(payload, dict) else None
        if not isinstance(key, str) or not key:
            return None
        return (None, verify_api_key(key))

    def authenticate_header(self, request):
        return 'Basic realm="lodestar"'


class CorsMixin:
    """Lets browser SDKs on any origin post (the endpoints read no cookie). Preflights
    carry no key and no body, so they skip both."""

    def get_permissions(self):
        if self.request.method == "OPTIONS":
            return [AllowAny()]
        return super().get_permissions()

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        origin = request.META.get("HTTP_ORIGIN")
        if origin:
            response["Access-Control-Allow-Origin"] = origin
            response["Access-Control-Allow-Credentials"] = "true"
            response["Vary"] = "Origin"
        return response

    def options(self, request, *args, **kwargs):
        return Response(status=200, headers={
            "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
            "Access-Control-Allow-Headers": request.META.get(
                "HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "Content-Type, Authorization"),
            "Access-Control-Max-Age": str(CORS_MAX_AGE_SECONDS)})


class CaptureCountsSerializer(serializers.Serializer):
    accepted = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    rejected = serializers.IntegerField()


def _counts(result) -> dict:
    return {"accepted": result.accepted, "duplicates": result.duplicates,
            "rejected": result.rejected}


class ThrottledRetryLater(exceptions.Throttled):
    """Over the rate limit, answered as a server busy for a while: posthog-js retries a
    batch on 5xx but drops one refused with 429 (PostHog's own capture never answers 429)."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE


class PostHogCaptureApi(CorsMixin, APIView):
    authentication_classes = [PostHogKeyAuthentication]
    permission_classes = [CanSendEvents]
    throttle_classes = [EventRateThrottle]
    parser_classes: list = []

    def throttled(self, request, wait):
        raise ThrottledRetryLater(wait)

    @extend_schema(
        operation_id="posthog_capture",
        request={"application/json": POSTHOG_BODY_SCHEMA},
        responses={200: inline_serializer("PostHogCaptureReply", fields={
            "status": serializers.IntegerField(),
            **CaptureCountsSerializer().get_fields()})},
        description="PostHog's capture protocol, for PostHog SDKs pointed at Lodestar: a "
                    "`{\"api_key\", \"batch\": [...]}` body, an event list or one event; JSON, "
                    "gzip, `?compression=gzip-js` or base64/form `data=`. The key is a "
                    "Lodestar client-app key.",
    )
    def post(self, request, *args, **kwargs):
        payload = _posthog_payload(request)
        require_shape(payload, POSTHOG_BODY_SCHEMA)
        messages, sent_at = posthog.messages_of(payload)
        # posthog-js sends its clock's time of sending as the query's `_` (milliseconds),
        # which PostHog's own capture reads first.
        sent_in_query = request.query_params.get("_")
        if parse_time(sent_in_query) is not None:
            sent_at = sent_in_query
        now = timezone.now()
        address = client_address(request.META)
        visitor = posthog.cookieless_visitor_id(
            key_id=request.auth.pk, address=address,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            day=now.date().isoformat()) if address else None
        batch = posthog.translate(messages, sent_at=sent_at, now=now,
                                  cookieless_visitor=visitor)
        result = ingest_capture(batch=batch, api_key=request.auth, protocol=posthog.PROTOCOL)
        return Response({"status": 1, **_counts(result)})


class SegmentCaptureApi(CorsMixin, APIView):
    authentication_classes = [SegmentWriteKeyAuthentication]
    permission_classes = [CanSendEvents]
    throttle_classes = [EventRateThrottle]
    parser_classes: list = []
    message_type: str | None = None  # None: /v1/batch

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # analytics-python before 2.4 reads a refusal's `message`; without one it retries a
        # 400, 401 or 413 eleven times, holding up its queue, instead of dropping the batch.
        if response.status_code >= 400 and isinstance(response.data, dict):
            response.data["message"] = response.data.get("detail", "")
        return response

    @extend_schema(
        operation_id="segment_capture",
        request={"application/json": SEGMENT_BODY_SCHEMA},
        responses={200: inline_serializer("SegmentCaptureReply", fields={
            "success": serializers.BooleanField(),
            **CaptureCountsSerializer().get_fields()})},
        description="Segment's HTTP tracking API, for Segment libraries pointed at Lodestar: "
                    "the write key (a Lodestar client-app key) as the Basic auth user name.",
    )
    def post(self, request, *args, **kwargs):
        payload = _segment_payload(request)
        require_shape(payload, SEGMENT_BODY_SCHEMA)
        messages, sent_at = segment.messages_of(payload, message_type=self.message_type)
        batch = segment.translate(messages, sent_at=sent_at, now=timezone.now())
        result = ingest_capture(batch=batch, api_key=request.auth, protocol=segment.PROTOCOL)
        return Response({"success": True, **_counts(result)})


# posthog-js asks for flags and remote config on load; Lodestar has neither, and says so
# in the shape the SDK expects, so it runs without errors and loads no extra script.
_NO_REMOTE_CONFIG = {
    "supportedCompression": ["gzip", "gzip-js"],
    "sessionRecording": False,
    "heatmaps": False,
    "surveys": False,
    "siteApps": [],
    "capturePerformance": False,
    "captureDeadClicks": False,
    "autocaptureExceptions": False,
    "autocapture_opt_out": False,
    "hasFeatureFlags": False,
    "toolbarParams": {},
    "elementsChainAsString": True,
}


class PostHogFlagsApi(CorsMixin, APIView):
    """``/decide/`` and ``/flags/``: no feature flags."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes: list = []
    throttle_classes: list = []

    @extend_schema(operation_id="posthog_flags", request=None,
                   responses={200: dict}, description="No feature flags (posthog-js on load).")
    def post(self, request, *args, **kwargs):
        return Response({**_NO_REMOTE_CONFIG, "config": {"enable_collect_everything": True},
                         "flags": {}, "featureFlags": {}, "featureFlagPayloads": {},
                         "errorsWhileComputingFlags": False, "quotaLimited": []})

    get = post


class PostHogRemoteConfigApi(CorsMixin, APIView):
    """``/array/<token>/config``: no remote configuration."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(operation_id="posthog_remote_config", responses={200: dict},
                   description="No remote configuration (posthog-js on load).")
    def get(self, request, token: str):
        return Response({**_NO_REMOTE_CONFIG, "token": token})


class SegmentSettingsApi(CorsMixin, APIView):
    """``/v1/projects/<key>/settings``: what analytics.js (analytics-next) loads before it
    sends anything, from Segment's CDN unless `cdnURL` points it here; it then posts to
    this server's ``/v1``. An unknown key is a 404, as Segment's CDN answers."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(operation_id="segment_settings", responses={200: dict},
                   description="analytics.js's settings for a write key (on load).")
    def get(self, request, key: str):
        try:
            verify_api_key(key)
        except exceptions.AuthenticationFailed:
            raise exceptions.NotFound("No such write key.") from None
        return Response({
            "integrations": {"Segment.io": {"apiKey": key,
                                            "apiHost": f"{request.get_host()}/v1",
                                            "protocol": request.scheme}},
            "plan": {}, "edgeFunction": {}, "analyticsNextEnabled": True,
            "middlewareSettings": {}, "enabledMiddleware": {}, "remotePlugins": [],
            # No usage metrics to Segment's servers.
            "metrics": {"sampleRate": 0}})
