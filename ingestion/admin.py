from django.contrib import admin
from django.db import models, transaction
from django.db.models import Q, QuerySet

from ingestion.models import CaptureReject, EndUser, Event, IdentityLink, Item
from ingestion.signals import events_changing, item_categories_changed


class DeletesEventsAdmin(admin.ModelAdmin):
    """Deleting these rows deletes events (directly or by cascade): others learn which
    first, in the deleting transaction (the rollups rebuild those events' days)."""

    # The Event lookup that finds the events of a queryset of these rows.
    events_lookup: str

    def _send_events_deleting(self, rows: QuerySet) -> None:
        events_changing.send(sender=self.model,
                             events=Event.objects.filter(**{self.events_lookup: rows}))

    def cascaded(self, rows: list) -> list[tuple[type[models.Model], int]]:
        """The registered models whose rows go with ``rows``, and how many."""
        if self.model is Event:
            return []
        return [(Event, Event.objects.filter(**{self.events_lookup: rows}).count())]

    def get_deleted_objects(self, objs, request):
        """The delete confirmation names the rows and counts what goes with them: Django's
        own lists every related row, loading each event (an item with 500,000 events
        timed the page out). The rollups' rows of them go too, as derived data."""
        rows = list(objs)
        model_count = {self.model._meta.verbose_name_plural: len(rows)}
        perms_needed = set()
        for model, count in self.cascaded(rows):
            if count:
                model_count[model._meta.verbose_name_plural] = count
                if not self.admin_site._registry[model].has_delete_permission(request):
                    perms_needed.add(model._meta.verbose_name)
        return [str(row) for row in rows], model_count, perms_needed, []

    @transaction.atomic
    def delete_model(self, request, obj):
        self._send_events_deleting(self.model.objects.filter(pk=obj.pk))
        super().delete_model(request, obj)

    @transaction.atomic
    def delete_queryset(self, request, queryset):
        self._send_events_deleting(queryset)
        super().delete_queryset(request, queryset)


@admin.register(Item)
class ItemAdmin(DeletesEventsAdmin):
    list_display = ("item_id", "title", "category", "is_active", "updated_at")
    list_filter = ("is_active", "category")
    search_fields = ("item_id", "title")

    events_lookup = "item__in"

    @transaction.atomic
    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "category" in form.changed_data:
            item_categories_changed.send(sender=Item, item_pks=[obj.pk])


@admin.register(EndUser)
class EndUserAdmin(DeletesEventsAdmin):
    list_display = ("user_id", "first_seen", "last_seen")
    search_fields = ("user_id",)

    events_lookup = "user__in"

    def cascaded(self, rows: list) -> list[tuple[type[models.Model], int]]:
        links = IdentityLink.objects.filter(Q(alias__in=rows) | Q(person__in=rows)).count()
        return [*super().cascaded(rows), (IdentityLink, links)]


@admin.register(Event)
class EventAdmin(DeletesEventsAdmin):
    list_display = ("event_id", "type", "user", "item", "timestamp", "value", "sentiment_label")
    list_filter = ("type", "sentiment_label")
    search_fields = ("event_id", "user__user_id", "item__item_id")
    raw_id_fields = ("user", "item")
    date_hierarchy = "timestamp"
    show_full_result_count = False

    events_lookup = "pk__in"

    @transaction.atomic
    def save_model(self, request, obj, form, change):
        """An edited event's old and new days are rebuilt: the hourly check compares counts
        only, and would not see a changed user, value, or time within the day."""
        if not change:
            super().save_model(request, obj, form, change)
            return
        edited = Event.objects.filter(pk=obj.pk)
        events_changing.send(sender=Event, events=edited)  # the day it was on
        super().save_model(request, obj, form, change)
        events_changing.send(sender=Event, events=edited)  # the day it is on


@admin.register(IdentityLink)
class IdentityLinkAdmin(admin.ModelAdmin):
    """Links are made by identify and alias calls (services.link_identities, which keeps
    every person at the end of one link); one typed here could point an alias at an alias
    or at itself. Deleting a wrong link stays possible."""

    list_display = ("alias", "person", "linked_at")
    search_fields = ("alias__user_id", "person__user_id")
    raw_id_fields = ("alias", "person")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(CaptureReject)
class CaptureRejectAdmin(admin.ModelAdmin):
    """Each API key's recent rejects from the PostHog and Segment endpoints (the SDKs do
    not read per-event errors, so this is where a developer sees them)."""

    list_display = ("created_at", "api_key", "protocol", "event_name", "field", "message")
    list_filter = ("protocol", "api_key")
    search_fields = ("event_name", "message")
    readonly_fields = [f.name for f in CaptureReject._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
