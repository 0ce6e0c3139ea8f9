import hashlib
import threading
import time

from rest_framework import authentication, exceptions
from rest_framework_api_key.models import APIKey

from accounts.models import CaptureOnlyKey

KEYWORD = "Api-Key"
# A verified key is trusted for this long without a database round trip (about 3 ms of a
# recommendation request); revoking or expiring a key therefore takes effect within it.
VERIFIED_KEY_SECONDS = 30.0


class _VerifiedKeys:
    """Per-process memory of recently verified keys, by a digest of the plain key."""

    def __init__(self):
        self._entries: dict[str, tuple[float, APIKey]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _digest(key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> APIKey | None:
        entry = self._entries.get(self._digest(key))
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def remember(self, key: str, api_key: APIKey) -> None:
        with self._lock:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] >= now}
            self._entries[self._digest(key)] = (now + VERIFIED_KEY_SECONDS, api_key)

    def clear(self) -> None:
        with self._lock:
            self._entries = {}


verified_keys = _VerifiedKeys()


def verify_api_key(key: str) -> APIKey:
    """The client app's key for a plain key, however it was sent (the Api-Key header, or
    an SDK's body or Basic auth user name); AuthenticationFailed if it is not valid."""
    key = key.strip()
    if not key:
        raise exceptions.AuthenticationFailed("Empty API key.")
    # Keys are printable ASCII; anything else (a NUL, half of a surrogate pair sent in a
    # JSON body) could not be hashed or looked up, and is no key.
    if not (key.isascii() and key.isprintable()):
        raise exceptions.AuthenticationFailed("Invalid API key.")
    api_key = verified_keys.get(key)
    if api_key is None:
        try:
            api_key = APIKey.objects.get_from_key(key)
        except APIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if not api_key.is_valid(key) or api_key.has_expired:
            raise exceptions.AuthenticationFailed("Invalid or expired API key.")
        api_key.capture_only_key = CaptureOnlyKey.objects.filter(api_key=api_key).exists()
        verified_keys.remember(key, api_key)
    return api_key


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>` for client apps; keys are stored hashed by
    djangorestframework-api-key. A request authenticated this way has `request.auth`
    set to the APIKey and no user."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        if scheme != KEYWORD:
            return None
        return (None, verify_api_key(key))

    def authenticate_header(self, request):
        return KEYWORD
