"""What every API endpoint shares: one error shape, body size limit, client-app throttling.

Every error leaves the API as
``{"type": "client_error"|"validation_error"|"server_error", "code": str, "detail": str,
"attr": str | null, "errors": [{"code", "detail", "attr"}, ...]}``.
"""

import io
import logging

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError, connection, transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler as drf_exception_handler

from config.db import is_statement_timeout, statement_timeout_message

logger = logging.getLogger(__name__)

# How long clients are told to wait when the database is unavailable (a failover, a
# restart, connections being cut): SDKs and the native API's clients retry after it.
DATABASE_RETRY_AFTER_SECONDS = 5


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_code = "request_too_large"

    def __init__(self, limit: int):
        super().__init__(f"Request body is larger than the {limit // (1024 * 1024)} MB limit; "
                         "split it into smaller batches.")


class SizeLimitedJSONParser(JSONParser):
    """JSON parser that refuses bodies over INGEST_MAX_BODY_BYTES before reading them whole."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.INGEST_MAX_BODY_BYTES
        request = (parser_context or {}).get("request")
        declared = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if declared > limit:
            raise RequestTooLarge(limit)
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise RequestTooLarge(limit)
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except exceptions.ParseError as error:
            raise exceptions.ParseError(f"Malformed JSON: {error.detail}") from error
        except RecursionError:
            raise exceptions.ParseError("Malformed JSON: nested too deeply.") from None


class ClientAppRateThrottle(SimpleRateThrottle):
    """Per-API-key rate limit; session users (dashboards) are not throttled.

    One counter per key and fixed window (as GitHub's API counts), incremented atomically
    in the cache. DRF's SimpleRateThrottle keeps a list of every request's time instead and
    reads and rewrites it on each request: at 6,000/minute a 50 KB value per request. The
    price of a fixed window: a client may spend its whole budget at the end of one window
    and again at the start of the next.
    """

    scope = "client_app"

    def get_cache_key(self, request, view):
        api_key = getattr(request, "auth", None)
        if api_key is None or not hasattr(api_key, "prefix"):
            return None
        return self.cache_format % {"scope": self.scope, "ident": api_key.prefix}

    def allow_request(self, request, view):
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        now = self.timer()
        window_start = now - now % self.duration
        if self._count(f"{key}:{int(window_start)}") <= self.num_requests:
            return True
        self.retry_after = window_start + self.duration - now
        return False

    def _count(self, window_key: str) -> int:
        try:
            return self.cache.incr(window_key)
        except ValueError:  # the window's first request (or its counter was evicted)
            if self.cache.add(window_key, 1, timeout=self.duration + 1):
                return 1
            return self.cache.incr(window_key)

    def wait(self):
        return self.retry_after


class EventRateThrottle(ClientAppRateThrottle):
    """Sending events (the capture endpoints and POST /api/v1/events) counts against its
    own budget per key: every visitor's browser posts under a shop's web key, and a key's
    events must not use up its recommendations' budget, nor they its events'."""

    scope = "events"


def _flatten(detail, attr=None) -> list[dict]:
    if isinstance(detail, dict):
        return [e for key, value in detail.items()
                for e in _flatten(value, key if attr is None else f"{attr}.{key}")]
    if isinstance(detail, list):
        return [e for item in detail for e in _flatten(item, attr)]
    attr = None if attr == "non_field_errors" else attr
    return [{"code": getattr(detail, "code", "invalid"), "detail": str(detail), "attr": attr}]


def _error_body(*, status_code: int, code: str, detail: str, attr: str | None = None) -> dict:
    error_type = "server_error" if status_code >= 500 else "client_error"
    return {"type": error_type, "code": code, "detail": detail, "attr": attr,
            "errors": [{"code": code, "detail": detail, "attr": attr}]}


def error_response(*, status_code: int, code: str, detail: str, attr: str | None = None,
                   headers: dict | None = None) -> Response:
    return Response(_error_body(status_code=status_code, code=code, detail=detail, attr=attr),
                    status=status_code, headers=headers)


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 404 handler: an API path no view matches answers in the API's error shape
    (a client parsing JSON got an HTML page), any other path Django's page."""
    if _is_api(request):
        return JsonResponse(_error_body(status_code=404, code="not_found",
                                        detail="No such endpoint."), status=404)
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    """Django's 500 handler, for errors outside the API views' own handler (middleware,
    rendering): in the API's error shape on API paths."""
    if _is_api(request):
        return JsonResponse(_error_body(status_code=500, code="server_error",
                                        detail="Internal server error."), status=500)
    return defaults.server_error(request)


def exception_handler(exc, context):
    if isinstance(exc, RequestDataTooBig):
        exc = RequestTooLarge(settings.INGEST_MAX_BODY_BYTES)
    elif isinstance(exc, SuspiciousOperation):
        # Django's refusals of a request's shape (over DATA_UPLOAD_MAX_NUMBER_FIELDS query
        # parameters, say): the client's error, not a 500.
        exc = exceptions.ParseError(str(exc) or "Malformed request.")
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if is_statement_timeout(exc):
        # Roll the reads back rather than commit: on PostgreSQL the cancelled statement
        # aborted their transaction.
        if connection.in_atomic_block:
            transaction.set_rollback(True)
        # Not database_unavailable: the same request would be stopped again.
        return error_response(status_code=503, code="query_timeout",
                              detail=statement_timeout_message())
    if isinstance(exc, (OperationalError, InterfaceError)):
        # Nothing of the request was committed (the response comes after the commit), so
        # the client must retry, not give up: never a 500 for the database being away.
        logger.warning("Database unavailable: %s", exc)
        return error_response(status_code=503, code="database_unavailable",
                              detail="The database is unavailable; retry shortly.",
                              headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        return error_response(status_code=500, code="server_error",
                              detail="Internal server error.")
    if isinstance(exc, exceptions.ValidationError):
        errors = _flatten(exc.detail)
        first = errors[0] if errors else {"code": "invalid", "detail": "Invalid input.", "attr": None}
        response.data = {"type": "validation_error", **first, "errors": errors}
        return response
    detail = exc.detail if isinstance(exc, exceptions.APIException) else str(exc)
    code = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    if isinstance(code, (list, dict)):
        errors = _flatten(detail)
        first = errors[0]
    else:
        errors = [{"code": code, "detail": str(detail), "attr": None}]
        first = errors[0]
    response.data = {"type": "server_error" if response.status_code >= 500 else "client_error",
                     **first, "errors": errors}
    return response
