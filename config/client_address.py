"""Which address a request came from, behind TRUSTED_PROXY_COUNT proxies: posthog-js's
cookieless visitor ids and the login lockout (django-axes) both key on it."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_address(meta: dict) -> str:
    """The address the request came from: the connection's, or behind
    TRUSTED_PROXY_COUNT proxies the X-Forwarded-For entry the outermost of them added
    (entries left of it are the client's to write). Empty where it is not known."""
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies:
        forwarded = [entry.strip() for entry in meta.get("HTTP_X_FORWARDED_FOR", "").split(",")
                     if entry.strip()]
        return forwarded[-proxies] if len(forwarded) >= proxies else ""
    return meta.get("REMOTE_ADDR", "")


def login_address(request: HttpRequest) -> str | None:
    """django-axes' AXES_CLIENT_IP_CALLABLE. Behind a proxy the connection's address is the
    proxy's, so five wrong passwords for a username from anywhere locked it out for all.
    None where the entry is no address (a proxy's "ip:port", "unknown"): axes stores it in
    an inet column on PostgreSQL, which would refuse it with a 500."""
    address = client_address(request.META)
    for candidate in (address, address.rpartition(":")[0].strip("[]")):
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    return None
