from django.contrib import admin

from accounts.models import CaptureOnlyKey


@admin.register(CaptureOnlyKey)
class CaptureOnlyKeyAdmin(admin.ModelAdmin):
    """Marking an existing key capture-only (or taking the mark off) takes effect in each
    web process within accounts.authentication.VERIFIED_KEY_SECONDS."""

    list_display = ("api_key",)
    autocomplete_fields = ("api_key",)

    def get_readonly_fields(self, request, obj=None):
        # The key is the row's primary key: changing it added a second mark and left the
        # first key marked. Another key is marked by adding it.
        return ("api_key",) if obj is not None else ()
