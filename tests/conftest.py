"""Shared fixtures. Django imports stay inside fixtures so the pure-ML tests under
tests/recommender/test_ml_*.py also run without Django."""

import os
import shutil

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


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


def _require_chromium() -> None:
    if os.path.exists(CHROMIUM):
        return
    message = f"Chromium not found at {CHROMIUM}"
    if os.environ.get("LODESTAR_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def browser():
    """Request it after the fixtures that write to the database: Playwright's sync API runs
    an event loop in this thread, after which Django refuses synchronous queries here."""
    _require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def watch_errors(page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}")
            if message.type == "error" else None)
    return errors


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, and at the end of the run the PostgreSQL sessions
    still open on it closed first: live-server threads and the Celery workers' connection
    pools can outlive their tests, and an open session stops the database from being
    dropped (it stayed behind, with a warning)."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                       "WHERE datname = current_database() AND pid <> pg_backend_pid()")
