"""Capture-only marks in the admin."""

import pytest
from django.urls import reverse

from accounts.models import CaptureOnlyKey
from accounts.services import create_api_key

pytestmark = pytest.mark.django_db


def test_a_marked_key_is_not_swapped_for_another_by_editing_the_mark(admin_client):
    web_key, _ = create_api_key(name="web", capture_only=True)
    server_key, _ = create_api_key(name="server")

    admin_client.post(reverse("admin:accounts_captureonlykey_change", args=[web_key.pk]),
                      {"api_key": server_key.pk})

    # The web key stays marked; the server key is marked only by adding a mark for it.
    assert list(CaptureOnlyKey.objects.values_list("api_key", flat=True)) == [web_key.pk]
