"""Shared fixtures. Django imports stay inside fixtures so the pure-ML tests under
tests/recommender/test_ml_*.py also run without Django."""

import pytest


@pytest.fixture
def api_key(db) -> str:
    from accounts.services import create_api_key

    _, key = create_api_key(name="test client")
    return key


@pytest.fixture
def client_app(api_key):
    """An API client authenticated as a client app."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    return client


@pytest.fixture
def anonymous():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def pm_user(db):
    from accounts.services import create_login

    return create_login(username="pm", password="pm-password-1", role="product_manager")


@pytest.fixture
def admin_user(db):
    from accounts.services import create_login

    return create_login(username="boss", password="admin-password-1", role="admin")


@pytest.fixture
def pm_client(pm_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(pm_user)
    return client


@pytest.fixture
def admin_api_client(admin_user):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_login(admin_user)
    return client


@pytest.fixture
def model_store(settings, tmp_path):
    settings.MODEL_STORE = tmp_path / "models"
    return settings.MODEL_STORE
