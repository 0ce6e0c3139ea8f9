from django.urls import path
from django.views.generic import RedirectView

from analytics import views


app_name = "dashboards"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="dashboards:overview"), name="home"),
    path("dashboards/overview/", views.OverviewView.as_view(), name="overview"),
    path("dashboards/trends/", views.TrendsView.as_view(), name="trends"),
    path("dashboards/paths/", views.PathsView.as_view(), name="paths"),
    path("dashboards/lifecycle/", views.LifecycleView.as_view(), name="lifecycle"),
    path("dashboards/stickiness/", views.StickinessView.as_view(), name="stickiness"),
    path("dashboards/users/", views.UserTimelineView.as_view(), name="users"),
    path("dashboards/funnels/", views.FunnelView.as_view(), name="funnels"),
    path("dashboards/retention/", views.RetentionView.as_view(), name="retention"),
    path("dashboards/items/", views.ItemsView.as_view(), name="items"),
    path("dashboards/sentiment/", views.SentimentView.as_view(), name="sentiment"),
    path("dashboards/recommendations/", views.RecommendationsView.as_view(),
         name="recommendations"),
]
