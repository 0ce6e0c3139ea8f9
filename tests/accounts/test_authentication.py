import pytest
from rest_framework_api_key.models import APIKey

from accounts import authentication

URL = "/api/v1/users"
BODY = {"users": [{"user_id": "u1"}]}


@pytest.fixture(autouse=True)
def forget_verified_keys():
    authentication.verified_keys.clear()
    yield
    authentication.verified_keys.clear()


@pytest.mark.django_db
def test_a_verified_key_is_not_looked_up_again(client_app, django_assert_num_queries):
    assert client_app.post(URL, BODY, format="json").status_code == 200
    with django_assert_num_queries(5):  # the upsert's own five, no key lookup
        assert client_app.post(URL, BODY, format="json").status_code == 200


@pytest.mark.django_db
def test_a_revoked_key_is_refused_once_the_trust_window_passes(client_app, monkeypatch):
    assert client_app.post(URL, BODY, format="json").status_code == 200
    APIKey.objects.update(revoked=True)
    monkeypatch.setattr(authentication, "VERIFIED_KEY_SECONDS", 0.0)
    authentication.verified_keys.clear()

    response = client_app.post(URL, BODY, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "authentication_failed"


@pytest.mark.django_db
def test_a_key_no_database_could_look_up_is_refused_not_a_server_error(client):
    import json

    # Half of a UTF-16 surrogate pair (json.dumps escapes it, as a JavaScript client's
    # JSON does) and a NUL character.
    for key in ("\ud800", "a\u0000b"):
        response = client.post("/batch/", data=json.dumps({"api_key": key, "batch": []}),
                               content_type="application/json")
        assert response.status_code == 401, response.content
    header = client.post(URL, BODY, content_type="application/json",
                         HTTP_AUTHORIZATION="Api-Key a\x00b")
    assert header.status_code == 401
