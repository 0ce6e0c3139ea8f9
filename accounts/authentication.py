from rest_framework import authentication, exceptions
from rest_framework_api_key.models import APIKey

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Api-Key <key>` for client apps; keys are stored hashed by
    djangorestframework-api-key. A request authenticated this way has `request.auth`
    set to the APIKey and no user."""

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, key = header.partition(" ")
        if scheme != KEYWORD:
            return None
        key = key.strip()
        if not key:
            raise exceptions.AuthenticationFailed("Empty API key.")
        try:
            api_key = APIKey.objects.get_from_key(key)
        except APIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if not api_key.is_valid(key) or api_key.has_expired:
            raise exceptions.AuthenticationFailed("Invalid or expired API key.")
        return (None, api_key)

    def authenticate_header(self, request):
        return KEYWORD
