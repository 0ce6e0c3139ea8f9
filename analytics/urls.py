from django.urls import path

from analytics.apis import (
    FunnelApi,
    ItemsApi,
    LifecycleApi,
    OverviewApi,
    PathsApi,
    RecommendationsApi,
    RetentionApi,
    SentimentApi,
    StickinessApi,
    TrendsApi,
    UserTimelineApi,
)


app_name = "analytics"

urlpatterns = [
    path("overview", OverviewApi.as_view(), name="overview"),
    path("funnel", FunnelApi.as_view(), name="funnel"),
    path("retention", RetentionApi.as_view(), name="retention"),
    path("items", ItemsApi.as_view(), name="items"),
    path("sentiment", SentimentApi.as_view(), name="sentiment"),
    path("recommendations", RecommendationsApi.as_view(), name="recommendations"),
    path("trends", TrendsApi.as_view(), name="trends"),
    path("lifecycle", LifecycleApi.as_view(), name="lifecycle"),
    path("paths", PathsApi.as_view(), name="paths"),
    path("stickiness", StickinessApi.as_view(), name="stickiness"),
    # <path:>: user ids may hold a slash (Shopify's gid://shopify/Customer/1).
    path("users/<path:user_id>/timeline", UserTimelineApi.as_view(), name="user-timeline"),
]
