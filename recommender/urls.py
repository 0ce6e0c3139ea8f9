from django.urls import path

app_name = "recommender"

urlpatterns: list = []
