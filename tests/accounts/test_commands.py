"""The commands that hand out credentials: what they print is what works."""

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework_api_key.models import APIKey

from accounts.permissions import is_product_manager_or_staff

pytestmark = pytest.mark.django_db


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().splitlines()


def test_create_api_key_prints_a_key_that_authenticates():
    lines = run("create_api_key", "shop frontend")

    key = lines[-1]
    assert APIKey.objects.get_from_key(key).name == "shop frontend"
    assert "not shown again" in lines[0]


def test_create_demo_accounts_creates_each_role_once():
    lines = run("create_demo_accounts")
    users = get_user_model().objects

    admin, pm = users.get(username="admin"), users.get(username="pm")
    assert admin.is_staff and admin.is_superuser
    assert not pm.is_staff and is_product_manager_or_staff(pm)
    admin_password = next(line for line in lines if "admin login" in line).split(" / ")[1]
    pm_password = next(line for line in lines if "product manager login" in line).split(" / ")[1]
    assert admin.check_password(admin_password) and pm.check_password(pm_password)
    demo_key = next(line for line in lines if "demo API key" in line).split()[-1]
    assert APIKey.objects.get_from_key(demo_key).name == "demo"

    again = run("create_demo_accounts")

    assert "exist already" in again[0]
    assert users.count() == 2 and APIKey.objects.count() == 1


def test_a_capture_only_key_sends_events_and_nothing_else():
    from rest_framework.test import APIClient

    lines = run("create_api_key", "shop web pages", "--capture-only")
    assert lines[0].startswith("Created capture-only API key 'shop web pages'")
    web = APIClient()
    web.credentials(HTTP_AUTHORIZATION=f"Api-Key {lines[-1]}")

    sent = web.post("/api/v1/events", {"type": "signup", "user_id": "u1"}, format="json")
    assert sent.status_code == 200 and sent.json()["accepted"] == 1
    refused = web.get("/api/v1/recommendations", {"user_id": "u1"})
    assert refused.status_code == 403
    assert "capture-only key may only send events" in refused.json()["detail"]
