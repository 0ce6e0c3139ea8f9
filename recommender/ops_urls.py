from django.urls import path

from recommender import ops_apis, ops_views

app_name = "ops"

urlpatterns = [
    path("jobs/", ops_views.job_list, name="jobs"),
    path("jobs/train/", ops_views.train_now, name="train"),
    path("jobs/<int:job_id>/", ops_views.job_detail, name="job"),
    path("jobs/<int:job_id>/cancel/", ops_views.cancel_job, name="cancel"),
    path("jobs/<int:job_id>/progress.json", ops_apis.JobProgressApi.as_view(),
         name="job-progress"),
    path("models/", ops_views.model_versions, name="models"),
    path("models/<int:version_id>/promote/", ops_views.promote, name="promote"),
    path("models/<int:version_id>/split/", ops_views.traffic_split, name="split"),
    path("models/<str:kind>/rollback/", ops_views.roll_back, name="rollback"),
]
