"""Rollups of the event log that the dashboards read instead of every raw event.

Shapes, chosen by measurement (benchmarks/README.md):
- `DailyEventRollup`: a day's events of one type and category (counts and value sums add
  up over any range);
- `UserDayRollup`: a user's activity on a day in one category, with how many of the events
  were views and purchases of items (persons, viewers and purchasers per category are
  counted over these);
- `UserDayActivity`: a user's activity on a day over all categories, which the unfiltered
  dashboards count persons over (at 10M events a user's day spans about 2.5 categories,
  so it has that many times fewer rows);
- `DailyPropertyRollup`: a day's events of one type by the value of one property key an
  admin chose (settings.ANALYTICS_ROLLUP_PROPERTIES), which trends broken down by that key,
  or filtered on one of its values, add up.
Both per-user tables mark which of the standard event types (`TYPE_BITS`) the user's day
held, so unique persons of those types (trends' "unique users") are counted over them too,
and when the day first held each of them (`FirstOccurrences`), which a funnel's first step
is read from, and the day's event types in time order (`DayPath`), which paths are read
from.
Identity links are applied when persons are counted, so a link made later changes past
counts exactly as on raw events. Categories are the item's when the day was rolled up; a
category change marks the item for a rebuild of its days (`RollupDirtyItem`, then
`RollupDirtyDay`): until those updates run (5 days each), category-filtered answers count
the item's earlier events under its old category.

What the rollups cover is every event received before `RollupState.watermark`; readers
add the events received since from the raw table (see analytics/insights/sources.py).
"""

from django.db import models

from ingestion.models import EndUser, IdentityLink, Item


# The bit each standard event type sets in `type_bits`. Stored in the rollups: changing a
# type's bit or adding a type (with its FirstOccurrences column) needs the rollups started
# over (a migration, as 0004 and 0007 do), since the rows rolled up before lack it.
TYPE_BITS = {"view": 1, "click": 2, "add_to_cart": 4, "purchase": 8, "rating": 16,
             "review": 32}
TYPE_BITS_HELP = "Bit TYPE_BITS[t] set: the day held an event of type t"


def first_at_field(event_type: str) -> str:
    """The per-user rollups' column holding the day's first event of a TYPE_BITS type."""
    return f"first_{event_type}_at"


class FirstOccurrences(models.Model):
    """When the user's day first held each standard event type (in UserDayRollup: on the
    category's items), None for never. A funnel's first step is each person's earliest
    event of its type in the range, which is the earliest of these over the range's days:
    at 10M events over 120 days, 0.8M user-days to read instead of 4.3M view events
    (benchmarks/README.md, session 17)."""

    first_view_at = models.DateTimeField(null=True, blank=True)
    first_click_at = models.DateTimeField(null=True, blank=True)
    first_add_to_cart_at = models.DateTimeField(null=True, blank=True)
    first_purchase_at = models.DateTimeField(null=True, blank=True)
    first_rating_at = models.DateTimeField(null=True, blank=True)
    first_review_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


class DayPath(models.Model):
    """The event types of the row's events in time order, as a JSON array, repeats in a row
    folded within each update that added to it, or over the whole day once recomputed (the
    reader folds again across updates and days). A person's path over a range is their
    days' paths joined in day order: at 10M events over 120 days, 0.8M user-days to read
    instead of sorting 6.7M events per person (benchmarks/README.md, session 19).

    An update appends its events when they all come after the row's last one; an event at
    or before that (a late one) makes the path NULL, stale, and the same update recomputes
    it from the user's events of that day (found through the stale_path partial indexes).
    Readers take the paths of any row still stale from the raw events.
    """

    path = models.TextField(null=True, blank=True,
                            help_text="JSON array of event types in time order; NULL: stale")
    path_start_at = models.DateTimeField(null=True, blank=True,
                                         help_text="The row's first event's time")
    path_end_at = models.DateTimeField(null=True, blank=True,
                                       help_text="The row's last event's time")

    class Meta:
        abstract = True


class DailyEventRollup(models.Model):
    day = models.DateField()
    event_type = models.CharField(max_length=64)
    # The item's category; "" for events without an item or items without a category.
    category = models.CharField(max_length=255)
    events = models.BigIntegerField()
    value_sum = models.FloatField()
    value_events = models.BigIntegerField(help_text="Events with a value (for averages)")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "event_type", "category"],
                                               name="daily_event_rollup_key")]


class DailyPropertyRollup(models.Model):
    """A day's events of one type and item category by the value of one property key of
    settings.ANALYTICS_ROLLUP_PROPERTIES, the value as a trends breakdown buckets it (the
    property as text; analytics.services.NONE_VALUE where the event lacks it or it is null).
    Each day, type and value has a row per category, which a category filter reads, and
    one summing every category, which the unfiltered trends read: adding up the categories'
    rows instead took the weekly breakdown with compare over 120 days at 10M events from
    16-17 to 80-121 ms, and its 10M/1M time ratio to 1.7 (benchmarks/README.md, session
    27)."""

    day = models.DateField()
    event_type = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    # The item's category; "" for events without an item or items without a category,
    # and in the rows summing every category.
    category = models.CharField(max_length=255)
    every_category = models.BooleanField(
        default=False, help_text="The row sums the events of every category")
    value = models.TextField()
    # The unique key holds the value's MD5 instead of the value: a property can be any
    # length, and a PostgreSQL btree entry can hold at most about 2,700 bytes.
    value_hash = models.CharField(max_length=32)
    events = models.BigIntegerField()
    value_sum = models.FloatField()
    value_events = models.BigIntegerField(help_text="Events with a value (for averages)")

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["day", "event_type", "key", "every_category", "category", "value_hash"],
            name="daily_property_rollup_key")]


class UserDayRollup(FirstOccurrences, DayPath):
    """A user's activity on a day in one category. Its views, purchases and first
    occurrences are of events on the category's items only (the category "" also holds
    events without an item, for the events, type bits and path)."""

    day = models.DateField()
    # No constraint in the database: the rows are copied from events, whose user is
    # checked already, and checking each of an update's new rows again at its commit
    # took a fifth of the update (benchmarks/README.md, session 16). Deleting a user
    # still deletes its rows (Django's cascade); one deleted outside the admin while an
    # update reads its events can leave that update's rows for it, which the hourly
    # check finds in the last 7 days (the day's event counts differ) and rebuilds.
    user = models.ForeignKey(EndUser, on_delete=models.CASCADE, db_index=False,
                             db_constraint=False, related_name="+")
    category = models.CharField(max_length=255)
    events = models.BigIntegerField()
    views = models.BigIntegerField()
    purchases = models.BigIntegerField()
    type_bits = models.BigIntegerField(default=0, help_text=TYPE_BITS_HELP)
    # The user's identity link, joined straight on user_id as Event.identity_link is.
    identity_link = models.ForeignObject(IdentityLink, on_delete=models.DO_NOTHING,
                                         from_fields=["user"], to_fields=["alias"], null=True,
                                         related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["day", "user", "category"],
                                               name="user_day_rollup_key")]
        indexes = [models.Index(fields=["day"], name="user_day_rollup_stale_path",
                                condition=models.Q(path__isnull=True)),
                   # One category's persons over a range, read from the index alone: the
                   # key above leads with the day, so a category was a scan of every row
                   # in the range (benchmarks/README.md, session 25).
                   models.Index(fields=["category", "day"], include=["user"],
                                name="user_day_rollup_category")]


class UserDayActivity(FirstOccurrences, DayPath):
    """A user's activity on a day over all categories: UserDayRollup summed per (day, user),
    with the first occurrences of every event, with an item or without.

    `previous_day` links each row to the user's row before it, so the users active on any
    day since a date D are the rows since D whose previous day is before D (or none): a
    filtered count instead of grouping every row of the range by user (the overview over
    120 days at 10M events: 1.6-2.0 s grouping, 0.50-0.57 s counting; benchmarks/README.md,
    session 28). An update gives the rows it adds their previous day, and links its users'
    later rows again where a late day came in between."""

    day = models.DateField()
    # Unchecked in the database, as UserDayRollup.user is.
    user = models.ForeignKey(EndUser, on_delete=models.CASCADE, db_index=False,
                             db_constraint=False, related_name="+")
    previous_day = models.DateField(
        null=True, blank=True,
        help_text="The user's latest earlier day with a row; none: the first")
    events = models.BigIntegerField()
    type_bits = models.BigIntegerField(default=0, help_text=TYPE_BITS_HELP)
    identity_link = models.ForeignObject(IdentityLink, on_delete=models.DO_NOTHING,
                                         from_fields=["user"], to_fields=["alias"], null=True,
                                         related_name="+")

    class Meta:
        verbose_name_plural = "user day activity"
        constraints = [models.UniqueConstraint(fields=["day", "user"],
                                               name="user_day_activity_key")]
        indexes = [models.Index(fields=["day"], name="user_day_activity_stale_path",
                                condition=models.Q(path__isnull=True)),
                   # An update finds its users' rows to link their previous days.
                   models.Index(fields=["user", "day"], name="user_day_activity_user")]


class RollupState(models.Model):
    """One row: how far the rollups reach, and how the last update went."""

    watermark = models.DateTimeField(
        help_text="Every event received before this is in the rollups")
    time_zone = models.CharField(max_length=64, help_text="Days are calendar days here")
    updated_at = models.DateTimeField()
    last_events = models.BigIntegerField(default=0, help_text="Events the last update added")
    last_seconds = models.FloatField(default=0.0)
    rebuilt_at = models.DateTimeField(null=True, blank=True)
    checked_at = models.DateTimeField(
        null=True, blank=True, help_text="When the recent days were last compared with their events")
    property_keys = models.JSONField(
        default=list, blank=True,
        help_text="The property keys DailyPropertyRollup counts every rolled-up event of")
    refused_property_keys = models.JSONField(
        default=dict, blank=True,
        help_text="Keys of ANALYTICS_ROLLUP_PROPERTIES not counted, with the day that had "
                  "more values than ANALYTICS_ROLLUP_PROPERTY_MAX_VALUES: {key: {day, values, "
                  "limit}}")

    class Meta:
        verbose_name = "rollup state"


class RollupDirtyItem(models.Model):
    """An item whose category changed: the next update turns it into its days to rebuild.
    Marking again moves marked_at, so an update that read the older mark cannot remove
    the newer one (its delete matches the mark it read)."""

    item = models.OneToOneField(Item, on_delete=models.CASCADE, primary_key=True,
                                related_name="+")
    marked_at = models.DateTimeField()


class RollupDirtyDay(models.Model):
    """A day whose rollup rows are rebuilt from raw events by the next updates, a few days
    per update (written only under the rollup lock: by updates, and in the transaction of
    an admin's deletion of events)."""

    day = models.DateField(primary_key=True)
