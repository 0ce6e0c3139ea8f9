"""The OpenAPI schema and Swagger UI that client developers read: every client-app
endpoint documented, and the docs page served from our own static files (no CDN)."""

import re

import pytest

pytestmark = pytest.mark.django_db

CLIENT_APP_PATHS = {
    "/api/v1/events": "post",
    "/api/v1/items": "post",
    "/api/v1/users": "post",
    "/api/v1/recommendations": "get",
    "/api/v1/items/{item_id}/similar": "get",
    "/api/v1/sentiment": "post",
}


def test_schema_documents_every_client_app_endpoint(admin_api_client):
    paths = admin_api_client.get("/api/schema/?format=json").json()["paths"]

    for path, method in CLIENT_APP_PATHS.items():
        assert method in paths[path], path
    assert {"ApiKeyAuth": []} in paths["/api/v1/events"]["post"]["security"]
    parameters = {p["name"] for p in paths["/api/v1/recommendations"]["get"]["parameters"]}
    assert {"user_id", "k", "category", "exclude"} <= parameters


def test_docs_page_loads_its_assets_from_this_server(admin_api_client):
    html = admin_api_client.get("/api/docs/").content.decode()

    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any("swagger-ui" in source for source in sources)
    assert all(not source.startswith(("http://", "https://", "//")) for source in sources)
