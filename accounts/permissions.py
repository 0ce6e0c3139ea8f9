"""The three roles: client apps (API key), product managers (read dashboards), admins (staff)."""

from rest_framework.permissions import BasePermission
from rest_framework_api_key.models import APIKey

PRODUCT_MANAGER_GROUP = "product_manager"


def is_product_manager_or_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (
        user.is_staff or user.groups.filter(name=PRODUCT_MANAGER_GROUP).exists()))


class IsClientApp(BasePermission):
    """Only requests carrying a valid API key."""

    message = "This endpoint needs an API key: `Authorization: Api-Key <key>`."

    def has_permission(self, request, view):
        return isinstance(request.auth, APIKey)


class IsProductManagerOrStaff(BasePermission):
    message = "Log in as a product manager or an admin."

    def has_permission(self, request, view):
        return is_product_manager_or_staff(request.user)


class IsStaff(BasePermission):
    message = "Admins only."

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class IsSignedInOrClientApp(BasePermission):
    """API schema and docs: any logged-in user or a client app."""

    def has_permission(self, request, view):
        return isinstance(request.auth, APIKey) or bool(
            request.user and request.user.is_authenticated)
