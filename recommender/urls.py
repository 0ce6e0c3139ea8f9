from django.urls import path

from recommender.apis import RecommendationsApi, SentimentApi, SimilarItemsApi

app_name = "recommender"

urlpatterns = [
    path("recommendations", RecommendationsApi.as_view(), name="recommendations"),
    path("items/<str:item_id>/similar", SimilarItemsApi.as_view(), name="similar-items"),
    path("sentiment", SentimentApi.as_view(), name="sentiment"),
]
