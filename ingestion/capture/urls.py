"""Mounted at the site root: the SDKs append these paths to the host they are given.

One path per protocol is in the OpenAPI schema (``/batch/``, ``/v1/batch``); the other
paths the SDKs use run the same view but are left out of it, as is posthog-js's flags and
config plumbing."""

from django.urls import path

from ingestion.capture.apis import (
    PostHogCaptureApi,
    PostHogFlagsApi,
    PostHogRemoteConfigApi,
    SegmentCaptureApi,
    SegmentSettingsApi,
)

app_name = "capture"

# Segment's call types and the one-letter paths analytics.js (its browser library) uses.
SEGMENT_PATHS = {"track": "t", "identify": "i", "page": "p", "screen": "s", "alias": "a",
                 "group": "g"}
POSTHOG_ALIASES = ("capture/", "e/", "e", "i/v0/e/", "i/v0/e", "batch")

urlpatterns = [
    path("batch/", PostHogCaptureApi.as_view(), name="posthog"),
    *[path(alias, PostHogCaptureApi.as_view(schema=None)) for alias in POSTHOG_ALIASES],
    path("decide/", PostHogFlagsApi.as_view(schema=None), name="posthog-decide"),
    path("flags/", PostHogFlagsApi.as_view(schema=None), name="posthog-flags"),
    path("array/<str:token>/config", PostHogRemoteConfigApi.as_view(schema=None),
         name="posthog-config"),
    path("v1/projects/<str:key>/settings", SegmentSettingsApi.as_view(schema=None),
         name="segment-settings"),
    path("v1/batch", SegmentCaptureApi.as_view(), name="segment-batch"),
    # analytics.js and Kotlin post to /v1/b; Ruby, Java and the older Android library to
    # /v1/import (Java with a trailing slash).
    *[path(alias, SegmentCaptureApi.as_view(schema=None))
      for alias in ("v1/b", "v1/batch/", "v1/import", "v1/import/")],
    *[path(f"v1/{kind}", SegmentCaptureApi.as_view(message_type=kind, schema=None),
           name=f"segment-{kind}") for kind in SEGMENT_PATHS],
    *[path(f"v1/{short}", SegmentCaptureApi.as_view(message_type=kind, schema=None))
      for kind, short in SEGMENT_PATHS.items()],
]
