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
