from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import transaction
from rest_framework_api_key.models import APIKey

from accounts.models import CaptureOnlyKey
from accounts.permissions import PRODUCT_MANAGER_GROUP


@transaction.atomic
def create_api_key(*, name: str, capture_only: bool = False) -> tuple[APIKey, str]:
    """Returns the stored key and the plain key, which is shown once and never stored.
    ``capture_only``: the key may only send events (accounts.models.CaptureOnlyKey)."""
    api_key, key = APIKey.objects.create_key(name=name)
    if capture_only:
        CaptureOnlyKey.objects.create(api_key=api_key)
    return api_key, key


@transaction.atomic
def create_login(*, username: str, password: str, role: str):
    """role is "admin" (staff and superuser) or "product_manager" (dashboards, read-only)."""
    if role not in {"admin", "product_manager"}:
        raise ValueError(f"Unknown role {role!r}")
    user_model = get_user_model()
    user = user_model.objects.create_user(username=username, password=password)
    if role == "admin":
        user.is_staff = user.is_superuser = True
        user.save(update_fields=["is_staff", "is_superuser"])
    else:
        group, _ = Group.objects.get_or_create(name=PRODUCT_MANAGER_GROUP)
        user.groups.add(group)
    return user
