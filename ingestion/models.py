import uuid

from django.db import models

ITEM_EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "review")
# A rating's or review's value: stars, halves included (MovieLens's ratings.csv has 0.5).
LOWEST_RATING, HIGHEST_RATING = 0.5, 5.0
# Any event's value is at most this far from zero: revenue and value sums over millions of
# events stay finite (two purchases of 1e308 summed to infinity, which broke every dashboard
# and rollup covering their day), with room for any real amount or count.
MAX_EVENT_VALUE = 1e15
TEXT_EVENT_TYPES = ("review", "rating")
# A review's headline, where the shop has one (an event property; a reviews CSV's
# `review_title` column): sentiment reads it before the text. Not `title`, which
# PostHog and Segment product events use for the product's name.
REVIEW_TITLE_PROPERTY = "review_title"


def review_headline(properties: object) -> str | None:
    """An event's review headline, if its properties hold one as text (anything else a
    client put under the key is not a headline)."""
    headline = properties.get(REVIEW_TITLE_PROPERTY) if isinstance(properties, dict) else None
    return headline if isinstance(headline, str) and headline.strip() else None


# The events sentiment scores: any with text, and reviews or ratings with a headline and no
# body ("Runs small!" and one star). The key alone is tested, which admits a headline
# property that review_headline refuses (blank, a number): such an event, like one with a
# blank text, has nothing to read and is marked seen with no label (score_events).
HAS_SENTIMENT_TEXT = ~models.Q(text="") | models.Q(type__in=TEXT_EVENT_TYPES,
                                                   properties__has_key=REVIEW_TITLE_PROPERTY)


def has_sentiment_text(*, event_type: str, text: str, properties: object) -> bool:
    """HAS_SENTIMENT_TEXT of an event not stored yet."""
    return text != "" or (event_type in TEXT_EVENT_TYPES and isinstance(properties, dict)
                          and REVIEW_TITLE_PROPERTY in properties)


class Item(models.Model):
    item_id = models.CharField(max_length=255, unique=True)
    title = models.CharField(max_length=500, blank=True, default="")
    category = models.CharField(max_length=255, blank=True, default="", db_index=True)
    tags = models.JSONField(default=list, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.title or self.item_id


class EndUser(models.Model):
    """A user of the client app (not a Lodestar login)."""

    user_id = models.CharField(max_length=255, unique=True)
    traits = models.JSONField(default=dict, blank=True)
    first_seen = models.DateTimeField(null=True, blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "end user"

    def __str__(self) -> str:
        return self.user_id


class Event(models.Model):
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=64)
    # The (user, timestamp) and (item, timestamp) indexes below cover lookups by either key
    # alone, so the foreign keys get no index of their own: two fewer updates per insert.
    user = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="events",
                             db_index=False)
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="events",
                             db_index=False,
                             null=True, blank=True)
    timestamp = models.DateTimeField()
    received_at = models.DateTimeField()
    value = models.FloatField(null=True, blank=True,
                              help_text="Rating 0.5-5 for ratings and reviews, amount for purchases")
    text = models.TextField(blank=True, default="")
    properties = models.JSONField(default=dict, blank=True)
    rec_id = models.UUIDField(null=True, blank=True,
                              help_text="The recommendation response this event came from")
    sentiment_score = models.FloatField(null=True, blank=True,
                                        help_text="Probability that the text is positive")
    sentiment_label = models.CharField(max_length=16, blank=True, default="")
    sentiment_model = models.CharField(max_length=64, blank=True, default="")
    # The link of the event's user, if it is a linked alias, joined straight on user_id
    # (no column of its own, no join through the users table): analytics count persons as
    # COALESCE(identity_link.person_id, user_id).
    identity_link = models.ForeignObject("IdentityLink", on_delete=models.DO_NOTHING,
                                         from_fields=["user"], to_fields=["alias"], null=True,
                                         related_name="+")

    class Meta:
        indexes = [
            models.Index(fields=["user", "timestamp"], name="event_user_time"),
            # The items dashboard sums an item's events of a range by type, value and
            # sentiment, and counts its viewers: covered, PostgreSQL reads them from the
            # index alone (10M events, p95 over 120 days: one category 1.19 s -> 0.43 s,
            # every item 5.4 s -> 3.4 s).
            models.Index(fields=["item", "timestamp"], name="event_item_time",
                         include=["type", "value", "sentiment_label", "user"]),
            # Funnels, per-item viewers and unique persons read events of some types in a
            # range and only their user and item: covered, PostgreSQL reads them from the
            # index alone (10M events: the 30-day funnel 1.7 s -> 0.8 s, 120 days 3.1 s ->
            # 2.3 s).
            models.Index(fields=["type", "timestamp"], name="event_type_time",
                         include=["user", "item"]),
            models.Index(fields=["timestamp"], name="event_time"),
            # Analytics rollups read the events received since their watermark.
            models.Index(fields=["received_at"], name="event_received"),
            # Funnels look up each user's next step of a given type.
            models.Index(fields=["user", "type", "timestamp"], name="event_user_type_time"),
            # Sentiment analytics read only scored texts, and of them only the label and
            # item: covered here, PostgreSQL reads them from the index alone (2.9 s -> 0.7 s
            # for the 120-day sentiment dashboard at 10M events). SQLite builds this and
            # event_rec on their key columns alone (models.W040 is silenced for it).
            models.Index(fields=["timestamp"], name="event_scored_time",
                         include=["sentiment_label", "item", "id"],
                         condition=~models.Q(sentiment_label="")),
            # Recommendation performance joins these events to their impressions and reads
            # only their type, value and item: covered, the 446,000 attributed events of
            # the 10M-event benchmark are read from the index, not from the table at random.
            models.Index(fields=["rec_id"], name="event_rec", include=["type", "value", "item"],
                         condition=models.Q(rec_id__isnull=False)),
            # The sentiment sweep's texts not scored yet: almost none at any time, so the
            # periodic look for them reads a tiny index instead of the whole table.
            models.Index(fields=["id"], name="event_unscored_text",
                         condition=models.Q(sentiment_model="") & HAS_SENTIMENT_TEXT),
        ]
        # A NaN or out-of-range score from any scorer fails loudly at the write instead of
        # reaching the dashboards (PostgreSQL compares NaN above every number).
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sentiment_score__isnull=True)
                | models.Q(sentiment_score__gte=0.0, sentiment_score__lte=1.0),
                name="event_sentiment_score_in_unit_interval"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.event_id}"


class IdentityLink(models.Model):
    """``alias``'s events count as ``person``'s (an anonymous id linked to a known user by
    an SDK's identify or alias call). Events keep the id they were sent with: readers
    resolve a user to its person and the person to all its ids. ``person`` is never itself
    an alias, so one lookup resolves any id."""

    alias = models.OneToOneField(EndUser, on_delete=models.CASCADE, primary_key=True,
                                 related_name="identity_link")
    person = models.ForeignKey(EndUser, on_delete=models.CASCADE, related_name="aliases")
    linked_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.alias_id} → {self.person_id}"


class CaptureReject(models.Model):
    """An event an SDK sent that could not be stored. SDKs ignore the reply's per-event
    errors, so the admin shows each key's recent rejects instead; only the latest
    ``KEEP_PER_KEY`` per key are kept."""

    KEEP_PER_KEY = 200

    api_key = models.ForeignKey("rest_framework_api_key.APIKey", on_delete=models.CASCADE,
                                related_name="capture_rejects", null=True)
    protocol = models.CharField(max_length=16)
    event_name = models.CharField(max_length=255, blank=True, default="")
    field = models.CharField(max_length=64)
    message = models.CharField(max_length=500)
    payload = models.TextField(blank=True, default="", help_text="The first 2 KB as sent")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["api_key", "-created_at"], name="reject_key_time")]

    def __str__(self) -> str:
        return f"{self.protocol} {self.event_name}: {self.message}"
