"""Requests the API refuses answer in its one error shape, whatever part of Django or DRF
refuses them: an unknown path, too many parameters, JSON nested past Python's limit."""

import pytest

from ingestion.models import Event

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert (body["code"], body["errors"][0]["code"]) == (code, code)
    assert body["type"] == ("server_error" if status >= 500 else "client_error")
    return body


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/items/sku-1/similar/",
                                  "/api/v2/recommendations"])
def test_an_api_path_no_endpoint_serves_is_a_404_in_the_error_shape(client_app, path):
    assert_error(client_app.get(path), 404, "not_found")


def test_pages_outside_the_api_keep_djangos_404_page(client):
    response = client.get("/no-such-page/")

    assert response.status_code == 404 and "json" not in response["Content-Type"]


def test_more_query_parameters_than_django_reads_is_a_400(client_app, settings):
    query = "&".join(f"x{n}=1" for n in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))

    assert_error(client_app.get(f"/api/v1/recommendations?user_id=u&{query}"), 400,
                 "parse_error")


def test_json_nested_past_pythons_limit_is_a_400_and_stores_nothing(client_app):
    response = client_app.post("/api/v1/events", data="[" * 3000,
                               content_type="application/json")

    assert "nested" in assert_error(response, 400, "parse_error")["detail"]
    assert not Event.objects.exists()
