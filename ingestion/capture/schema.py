"""How the OpenAPI schema describes the SDKs' ways of sending the key."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class PostHogKeyScheme(OpenApiAuthenticationExtension):
    target_class = "ingestion.capture.apis.PostHogKeyAuthentication"
    name = "PostHogProjectKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer",
                "description": "A Lodestar client-app key, as the body's `api_key`/`token` "
                               "(PostHog SDKs) or `Authorization: Bearer <key>`"}


class SegmentWriteKeyScheme(OpenApiAuthenticationExtension):
    target_class = "ingestion.capture.apis.SegmentWriteKeyAuthentication"
    name = "SegmentWriteKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic",
                "description": "A Lodestar client-app key as the Basic auth user name, empty "
                               "password (Segment libraries), or the body's `writeKey`"}
