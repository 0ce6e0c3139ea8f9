from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz, readyz

api_v1 = [
    path("", include("ingestion.urls")),
    path("", include("recommender.urls")),
    path("analytics/", include("analytics.urls")),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("ops/", include("recommender.ops_urls")),
    path("ops/analytics/", include("analytics.ops_urls")),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("ingestion.capture.urls")),
    path("", include("analytics.dashboard_urls")),
]

handler404 = "config.api.not_found"
handler500 = "config.api.server_error"
