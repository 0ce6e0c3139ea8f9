"""The three roles: client apps (API key), product managers (read dashboards), admins (staff)."""

from functools import wraps

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework_api_key.models import APIKey

PRODUCT_MANAGER_GROUP = "product_manager"


def is_product_manager_or_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and (
        user.is_staff or user.groups.filter(name=PRODUCT_MANAGER_GROUP).exists()))


def is_staff(user) -> bool:
    return bool(user and user.is_authenticated and user.is_active and user.is_staff)


def staff_required(view):
    """Admin-only pages: visitors who are not logged in go to the login page; a logged-in
    product manager gets 403, since sending them to log in again would only loop."""

    @wraps(view)
    def staff_only_view(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not is_staff(request.user):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return staff_only_view


class IsClientApp(BasePermission):
    """Requests carrying a valid server API key; admins, who may do everything, also get in
    with their login (e.g. trying endpoints in the API docs). A capture-only key (the one
    in a shop's web pages) does not: CanSendEvents is for the endpoints it may use."""

    message = ("This endpoint needs a server API key: `Authorization: Api-Key <key>` (a "
               "capture-only key may only send events).")

    def has_permission(self, request, view):
        if isinstance(request.auth, APIKey):
            return not is_capture_only(request.auth)
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class CanSendEvents(IsClientApp):
    """Sending events: any client-app key, capture-only ones included."""

    message = "Sending events needs an API key."

    def has_permission(self, request, view):
        return isinstance(request.auth, APIKey) or super().has_permission(request, view)


def is_capture_only(api_key: APIKey) -> bool:
    """Set on the key when it is verified (accounts.authentication.verify_api_key)."""
    return getattr(api_key, "capture_only_key", False)


class IsProductManagerOrStaff(BasePermission):
    message = "Log in as a product manager or an admin."

    def has_permission(self, request, view):
        return is_product_manager_or_staff(request.user)


class IsStaff(BasePermission):
    message = "Admins only."

    def has_permission(self, request, view):
        return is_staff(request.user)


class IsSignedIn(BasePermission):
    """API schema and docs: people who logged in (admins, product managers). Client apps'
    keys open only the endpoints they call, not the documentation."""

    def has_permission(self, request, view):
        return bool(request.user and request.user.is_authenticated)
