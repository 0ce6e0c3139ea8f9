from django.db import models
from rest_framework_api_key.models import APIKey


class CaptureOnlyKey(models.Model):
    """Marks a client-app key that may only send events: the key a shop puts in its web
    pages (posthog-js, analytics.js), where any visitor can read it. It reaches the capture
    endpoints and POST /api/v1/events, not recommendations, sentiment, or the catalog and
    user upserts, which take a server key. What its events carry (an item's name and
    category, $set traits, identity links) is stored as from any key, as PostHog stores
    what its public project key sends."""

    api_key = models.OneToOneField(APIKey, on_delete=models.CASCADE, primary_key=True,
                                   related_name="capture_only")

    class Meta:
        verbose_name = "capture-only API key"

    def __str__(self) -> str:
        return f"{self.api_key.name} (capture only)"
