"""Who may use what: every endpoint family × every role, in one table.

Roles: anonymous; a client app (API key): ingestion, recommendations, similar items and
sentiment, nothing else; a web page's capture-only key: sending events, nothing else; a
product manager (login): dashboards, analytics API,
API schema and docs; an admin (staff login): everything, the client-app API included,
plus the ops pages and the admin. Only /healthz, /readyz and /login/ are open to
anyone."""

import base64
from urllib.parse import urlparse

import pytest
from django.urls import URLResolver, get_resolver, resolve

ANONYMOUS = "anonymous"
CLIENT_APP = "client app"
WEB_KEY = "capture-only key"
PRODUCT_MANAGER = "product manager"
ADMIN = "admin"
EVERYONE = {ANONYMOUS, CLIENT_APP, WEB_KEY, PRODUCT_MANAGER, ADMIN}
SENDS_KEY = {CLIENT_APP, WEB_KEY}
LOGIN_PATHS = {"/login/", "/admin/login/"}

# (family, method, path, JSON body, roles allowed)
ENDPOINTS = [
    ("events", "post", "/api/v1/events",
     {"type": "view", "user_id": "u1", "item_id": "sku-1",
      "timestamp": "2026-01-31T12:00:00+00:00"}, {CLIENT_APP, WEB_KEY, ADMIN}),
    ("items", "post", "/api/v1/items", {"items": [{"item_id": "sku-2", "title": "Tent"}]},
     {CLIENT_APP, ADMIN}),
    ("users", "post", "/api/v1/users", {"users": [{"user_id": "u2"}]}, {CLIENT_APP, ADMIN}),
    ("recommendations", "get", "/api/v1/recommendations?user_id=u1", None, {CLIENT_APP, ADMIN}),
    ("similar items", "get", "/api/v1/items/sku-1/similar", None, {CLIENT_APP, ADMIN}),
    ("sentiment", "post", "/api/v1/sentiment", {"texts": ["Great tent, kept me dry."]},
     {CLIENT_APP, ADMIN}),
    *[(f"analytics API {name}", "get", f"/api/v1/analytics/{name}", None,
       {PRODUCT_MANAGER, ADMIN})
      for name in ("overview", "trends", "funnel", "retention", "lifecycle", "stickiness", "paths",
                   "items", "sentiment", "recommendations", "users/timeline-user/timeline")],
    ("dashboards", "get", "/", None, {PRODUCT_MANAGER, ADMIN}),
    *[(f"dashboard {name}", "get", f"/dashboards/{name}/", None, {PRODUCT_MANAGER, ADMIN})
      for name in ("overview", "trends", "funnels", "retention", "lifecycle", "stickiness",
                   "paths", "items", "sentiment", "recommendations", "users")],
    # The SDK endpoints take the client app's key the SDKs' way (the body's api_key,
    # Basic auth): see test_role_access. An admin's login does not open them.
    *[("posthog capture", "post", f"/{path}", {"batch": [
        {"event": "$pageview", "distinct_id": "u1", "properties": {}}]}, SENDS_KEY)
      for path in ("batch/", "batch", "capture/", "e/", "e", "i/v0/e/", "i/v0/e")],
    *[("segment capture", "post", f"/v1/{path}", {"type": "track", "userId": "u1",
                                                  "event": "signup"}, SENDS_KEY)
      for path in ("batch", "b", "batch/", "import", "import/", "track", "identify", "page",
                   "screen", "alias", "group", "t", "i", "p", "s", "a", "g")],
    ("posthog flags", "post", "/decide/", {}, EVERYONE),
    ("posthog flags", "post", "/flags/", {}, EVERYONE),
    ("posthog remote config", "get", "/array/any-key/config", None, EVERYONE),
    ("segment settings", "get", "/v1/projects/{client_key}/settings", None, EVERYONE),
    ("ops jobs page", "get", "/ops/jobs/", None, {ADMIN}),
    ("ops models page", "get", "/ops/models/", None, {ADMIN}),
    ("ops analytics rollups", "get", "/ops/analytics/rollups/", None, {ADMIN}),
    ("ops analytics update", "post", "/ops/analytics/rollups/update/", None, {ADMIN}),
    ("ops train now", "post", "/ops/jobs/train/", None, {ADMIN}),
    ("ops progress JSON", "get", "/ops/jobs/{job_id}/progress.json", None, {ADMIN}),
    ("ops job detail", "get", "/ops/jobs/{job_id}/", None, {ADMIN}),
    ("ops cancel job", "post", "/ops/jobs/{job_id}/cancel/", None, {ADMIN}),
    ("ops promote", "post", "/ops/models/{version_id}/promote/", None, {ADMIN}),
    ("ops A/B split", "post", "/ops/models/{version_id}/split/", {"percent": 10}, {ADMIN}),
    ("ops roll back", "post", "/ops/models/recommender/rollback/", None, {ADMIN}),
    ("admin", "get", "/admin/", None, {ADMIN}),
    ("API schema", "get", "/api/schema/", None, {PRODUCT_MANAGER, ADMIN}),
    ("API docs", "get", "/api/docs/", None, {PRODUCT_MANAGER, ADMIN}),
    ("healthz", "get", "/healthz", None, EVERYONE),
    ("readyz", "get", "/readyz", None, EVERYONE),
    ("login", "get", "/login/", None, EVERYONE),
]


@pytest.fixture
def web_key(db) -> str:
    from accounts.services import create_api_key

    return create_api_key(name="web pages", capture_only=True)[1]


@pytest.fixture
def as_role(api_key, web_key, pm_user, admin_user):
    from rest_framework.test import APIClient

    def client_for(role: str) -> APIClient:
        client = APIClient()
        if role in SENDS_KEY:
            key = api_key if role == CLIENT_APP else web_key
            client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
        elif role == PRODUCT_MANAGER:
            client.force_login(pm_user)
        elif role == ADMIN:
            client.force_login(admin_user)
        return client

    return client_for


class StubSentimentScorer:
    def predict_with_source(self, texts):
        return [("positive", 0.9, "lexicon") for _ in texts]


@pytest.fixture
def world(db, settings, model_store, monkeypatch):
    """What the endpoints need to answer: an item, a job, a broker that needs no server and
    a sentiment scorer that does not load TensorFlow (this test is about access)."""
    from recommender import sentiment_scoring
    from recommender.models import ModelVersion, TrainingJob
    from tests.factories import EndUserFactory, ItemFactory

    settings.CELERY_BROKER_URL = "memory://"
    monkeypatch.setattr(sentiment_scoring, "_vader", StubSentimentScorer)
    ItemFactory(item_id="sku-1")
    EndUserFactory(user_id="timeline-user")
    version = ModelVersion.objects.create(kind="recommender", name="rec-candidate",
                                          artifact_path="missing", checksum="x")
    return {"job_id": TrainingJob.objects.create(kind="sentiment", started_by="test").pk,
            "version_id": version.pk}


def outcome(response) -> str:
    if response.status_code in (401, 403):
        return "refused"
    landed_on = urlparse(response.redirect_chain[-1][0]).path if response.redirect_chain else ""
    if landed_on in LOGIN_PATHS:
        return "refused"
    return "allowed"


@pytest.mark.parametrize("role", [ANONYMOUS, CLIENT_APP, WEB_KEY, PRODUCT_MANAGER, ADMIN])
@pytest.mark.parametrize("family, method, path, body, allowed", ENDPOINTS,
                         ids=[row[0] for row in ENDPOINTS])
def test_role_access(as_role, world, api_key, web_key, family, method, path, body, allowed,
                     role, django_capture_on_commit_callbacks):
    client = as_role(role)
    url = path.format(**world, client_key=api_key)
    key = api_key if role == CLIENT_APP else web_key
    if role in SENDS_KEY and family == "posthog capture":
        body = {**body, "api_key": key}
    if role in SENDS_KEY and family == "segment capture":
        client.credentials(HTTP_AUTHORIZATION="Basic "
                           + base64.b64encode(f"{key}:".encode()).decode())

    # Callbacks held back: "train now" must not run a real job here.
    with django_capture_on_commit_callbacks(execute=False):
        response = getattr(client, method)(url, body, format="json", follow=True)

    expected = "allowed" if role in allowed else "refused"
    assert outcome(response) == expected, (response.status_code, response.redirect_chain)
    if expected == "allowed":
        # Allowed means the endpoint did its job, not merely that it let the request in.
        acceptable = {200, 503} if family == "readyz" else {200, 201, 202}
        assert response.status_code in acceptable, response.content[:300]


def _routes(patterns, prefix: str = "") -> set[str]:
    """Every route of the URLconf; the Django admin's own URLs as one entry."""
    routes = set()
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            routes |= {route} if pattern.app_name == "admin" else _routes(pattern.url_patterns,
                                                                           route)
        else:
            routes.add(route)
    return routes


# Routes whose access is asserted by a test of their own instead of the table.
TESTED_ELSEWHERE = {"logout/": "test_logging_out_ends_the_session"}


def test_every_url_in_the_urlconf_has_an_access_decision(world):
    """A new endpoint fails here until a row above says who may call it."""
    decided = {resolve(urlparse(path.format(**world, client_key="any-key")).path).route
               for _, _, path, _, _ in ENDPOINTS}
    decided = {"admin/" if route.startswith("admin/") else route for route in decided}
    assert _routes(get_resolver().url_patterns) - decided - set(TESTED_ELSEWHERE) == set()


@pytest.mark.parametrize("role", [PRODUCT_MANAGER, ADMIN])
def test_logging_out_ends_the_session(as_role, role):
    client = as_role(role)
    client.post("/logout/")
    assert outcome(client.get("/dashboards/overview/", follow=True)) == "refused"


@pytest.mark.django_db
def test_repeated_failed_logins_lock_the_username_even_with_the_right_password(pm_user,
                                                                                settings):
    from django.test import Client

    browser = Client()
    first = browser.post("/login/", {"username": "pm", "password": "guess"})
    assert first.status_code == 200  # the form again, with its error
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        browser.post("/login/", {"username": "pm", "password": "guess"})
    locked = browser.post("/login/", {"username": "pm", "password": "pm-password-1"})
    assert locked.status_code == 429
    assert "_auth_user_id" not in browser.session
    # Another user from the same address is not locked out.
    from accounts.services import create_login

    create_login(username="other", password="other-password-1", role="product_manager")
    assert browser.post("/login/", {"username": "other", "password": "other-password-1"}
                        ).status_code == 302


@pytest.mark.django_db
def test_behind_a_proxy_failed_logins_lock_a_username_from_that_client_only(pm_user, settings):
    from django.test import Client

    settings.TRUSTED_PROXY_COUNT = 1
    # Every request reaches the web process from the proxy's address.
    attacker = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.7")
    owner = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="203.0.113.5")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        attacker.post("/login/", {"username": "pm", "password": "guess"})

    assert attacker.post("/login/", {"username": "pm", "password": "pm-password-1"}
                         ).status_code == 429
    assert owner.post("/login/", {"username": "pm", "password": "pm-password-1"}
                      ).status_code == 302
