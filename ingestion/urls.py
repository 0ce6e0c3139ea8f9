from django.urls import path

from ingestion.apis import EventIngestApi, ItemUpsertApi, UserUpsertApi

app_name = "ingestion"

urlpatterns = [
    path("events", EventIngestApi.as_view(), name="events"),
    path("items", ItemUpsertApi.as_view(), name="items"),
    path("users", UserUpsertApi.as_view(), name="users"),
]
