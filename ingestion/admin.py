from django.contrib import admin

from ingestion.models import EndUser, Event, Item


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ("item_id", "title", "category", "is_active", "updated_at")
    list_filter = ("is_active", "category")
    search_fields = ("item_id", "title")


@admin.register(EndUser)
class EndUserAdmin(admin.ModelAdmin):
    list_display = ("user_id", "first_seen", "last_seen")
    search_fields = ("user_id",)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("event_id", "type", "user", "item", "timestamp", "value", "sentiment_label")
    list_filter = ("type", "sentiment_label")
    search_fields = ("event_id", "user__user_id", "item__item_id")
    raw_id_fields = ("user", "item")
    date_hierarchy = "timestamp"
    show_full_result_count = False
