from django.urls import path

from recommender.apis import RecommendationsApi, SentimentApi, SimilarItemsApi

app_name = "recommender"

urlpatterns = [
    path("recommendations", RecommendationsApi.as_view(), name="recommendations"),
    # <path:>: item ids may hold a slash (Shopify's "gid://shopify/Product/1").
    path("items/<path:item_id>/similar", SimilarItemsApi.as_view(), name="similar-items"),
    path("sentiment", SentimentApi.as_view(), name="sentiment"),
]
