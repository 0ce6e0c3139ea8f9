"""Production settings in a fresh interpreter (settings load once per process), and the
public API's rate limit."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

ROOT = Path(__file__).resolve().parents[2]


def run_django(code_or_args: list[str], **env: str) -> subprocess.CompletedProcess:
    """Runs python with the given arguments under production settings and `env` only
    (plus PATH/HOME), so nothing from the test run's environment leaks in."""
    clean_env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", ""),
                 "DJANGO_SETTINGS_MODULE": "config.settings.production",
                 "LODESTAR_VAR_DIR": os.environ.get("LODESTAR_VAR_DIR", str(ROOT / "var")),
                 **env}
    return subprocess.run([sys.executable, *code_or_args], cwd=ROOT, env=clean_env,
                          capture_output=True, text=True, timeout=120)


PRINT_SETTINGS = ("import django; django.setup(); from django.conf import settings as s; "
                  "print(s.DEBUG, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
                  "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, "
                  "s.CACHES['default']['BACKEND'].rsplit('.', 1)[-1])")


def test_production_refuses_to_start_without_a_secret_key():
    result = run_django(["-c", PRINT_SETTINGS])

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SECRET_KEY must be set" in result.stderr


def test_production_turns_debug_off_and_cookies_secure():
    result = run_django(["-c", PRINT_SETTINGS], SECRET_KEY=secrets.token_urlsafe(50),
                        DJANGO_DEBUG="true")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True", "True", "True", "True",
                                     "LocMemCache"]


def test_rate_limits_are_shared_through_redis_when_there_is_one():
    result = run_django(["-c", PRINT_SETTINGS], SECRET_KEY=secrets.token_urlsafe(50),
                        REDIS_URL="redis://127.0.0.1:6379/0")

    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "RedisCache"


def test_on_sqlite_a_commit_is_on_disk_before_it_is_acknowledged(tmp_path):
    result = run_django(["-c", "import django; django.setup(); from django.db import connection; "
                         "cursor = connection.cursor(); "
                         "print(cursor.execute('PRAGMA journal_mode').fetchone()[0], "
                         "cursor.execute('PRAGMA synchronous').fetchone()[0])"],
                        SECRET_KEY=secrets.token_urlsafe(50), LODESTAR_VAR_DIR=str(tmp_path))

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["wal", "2"]  # 2: FULL, an fsync per commit


def test_check_deploy_is_clean_with_a_long_secret_key():
    result = run_django(["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                        SECRET_KEY=secrets.token_urlsafe(64))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_rollup_property_keys_are_read_trimmed_and_an_overlong_one_refused():
    show_keys = ("import django; django.setup(); from django.conf import settings as s; "
                 "print(s.ANALYTICS_ROLLUP_PROPERTIES)")
    secret = secrets.token_urlsafe(50)

    listed = run_django(["-c", show_keys], SECRET_KEY=secret,
                        ANALYTICS_ROLLUP_PROPERTIES=" plan , $browser,")
    overlong = run_django(["-c", show_keys], SECRET_KEY=secret,
                          ANALYTICS_ROLLUP_PROPERTIES="k" * 256)

    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "['plan', '$browser']"
    assert overlong.returncode != 0 and "at most 255 characters" in overlong.stderr


@pytest.mark.parametrize(("name", "default", "refused", "message"), [
    ("ANALYTICS_STATEMENT_TIMEOUT_SECONDS", "30.0", "-1", "must be 0 (no limit) or more"),
    ("ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES", "1000", "0", "must be 1 or more"),
])
def test_an_analytics_limit_out_of_range_is_refused_at_start(name, default, refused, message):
    show_limit = ("import django; django.setup(); from django.conf import settings as s; "
                  f"print(s.{name})")
    secret = secrets.token_urlsafe(50)

    as_shipped = run_django(["-c", show_limit], SECRET_KEY=secret)
    out_of_range = run_django(["-c", show_limit], SECRET_KEY=secret, **{name: refused})

    assert as_shipped.returncode == 0, as_shipped.stderr
    assert as_shipped.stdout.strip() == default
    assert out_of_range.returncode != 0 and message in out_of_range.stderr


class TestRateLimit:
    @pytest.fixture
    def two_requests_a_minute(self, monkeypatch):
        from recommender.apis import RecommendationsApi

        # The endpoint's own throttle (ClientAppRateThrottle, from the settings). DRF reads
        # THROTTLE_RATES once, when the class is defined, so a settings override is too late.
        (throttle,) = RecommendationsApi.throttle_classes
        monkeypatch.setattr(throttle, "THROTTLE_RATES", {"client_app": "2/minute"})
        # 15 s into a minute (counts are kept per minute), for as long as the test says.
        clock = {"now": 1_800_000_015.0}
        monkeypatch.setattr(throttle, "timer", lambda self: clock["now"])
        return clock

    # Counts are kept per API key, and every test's key is new: no cache to clear.
    def test_a_client_app_over_its_rate_gets_429_with_retry_after(
            self, client_app, two_requests_a_minute):
        url = reverse("recommender:recommendations") + "?user_id=u1"

        statuses = [client_app.get(url).status_code for _ in range(3)]

        assert statuses == [200, 200, 429]
        refused = client_app.get(url)
        assert refused.status_code == 429
        assert refused["Retry-After"] == "45"
        assert refused.json()["code"] == "throttled"

    def test_the_budget_comes_back_when_the_minute_is_over(self, client_app,
                                                            two_requests_a_minute):
        url = reverse("recommender:recommendations") + "?user_id=u1"
        for _ in range(3):
            client_app.get(url)

        two_requests_a_minute["now"] += 44
        assert client_app.get(url).status_code == 429
        two_requests_a_minute["now"] += 1
        assert [client_app.get(url).status_code for _ in range(3)] == [200, 200, 429]

    def test_sending_events_has_its_own_budget(self, client_app, two_requests_a_minute,
                                               monkeypatch):
        from config.api import EventRateThrottle

        # Read once, as THROTTLE_RATES: the class keeps what the fixture gave its parent.
        monkeypatch.setattr(EventRateThrottle, "THROTTLE_RATES",
                            {"client_app": "2/minute", "events": "3/minute"})
        recommendations = reverse("recommender:recommendations") + "?user_id=u1"
        assert [client_app.get(recommendations).status_code for _ in range(3)] == [200, 200, 429]

        def send():
            return client_app.post("/api/v1/events", {"type": "signup", "user_id": "u1"},
                                   format="json").status_code

        assert [send() for _ in range(4)] == [200, 200, 200, 429]

    def test_each_api_key_has_its_own_budget(self, client_app, two_requests_a_minute, db):
        from rest_framework.test import APIClient

        from accounts.services import create_api_key

        url = reverse("recommender:recommendations") + "?user_id=u1"
        for _ in range(3):
            client_app.get(url)
        _, other_key = create_api_key(name="other app")
        other = APIClient()
        other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")

        assert other.get(url).status_code == 200
