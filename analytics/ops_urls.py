from django.urls import path

from analytics import ops_views

app_name = "ops-analytics"

urlpatterns = [
    path("rollups/", ops_views.rollups, name="rollups"),
    path("rollups/update/", ops_views.roll_up_now, name="update"),
]
