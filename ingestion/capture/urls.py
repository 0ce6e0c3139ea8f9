"""Mounted at the site root: the SDKs append these paths to the host they are given."""

from django.urls import re_path

from ingestion.capture.apis import (
    PostHogCaptureApi,
    PostHogFlagsApi,
    PostHogRemoteConfigApi,
    SegmentCaptureApi,
)

app_name = "capture"

# analytics.js (Segment's browser library) uses the one-letter paths.
SEGMENT_PATHS = {"track": "t", "identify": "i", "page": "p", "screen": "s", "alias": "a",
                 "group": "g"}

urlpatterns = [
    re_path(r"^(?:batch|capture|e|i/v0/e)/?$", PostHogCaptureApi.as_view(),
            name="posthog"),
    re_path(r"^(?:decide|flags)/?$", PostHogFlagsApi.as_view(), name="posthog-flags"),
    re_path(r"^array/(?P<token>[^/]+)/config/?$", PostHogRemoteConfigApi.as_view(),
            name="posthog-config"),
    re_path(r"^v1/(?:batch|b)/?$", SegmentCaptureApi.as_view(), name="segment-batch"),
    *[re_path(rf"^v1/(?:{kind}|{short})/?$", SegmentCaptureApi.as_view(message_type=kind),
              name=f"segment-{kind}")
      for kind, short in SEGMENT_PATHS.items()],
]
