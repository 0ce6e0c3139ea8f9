import uuid
from datetime import UTC, datetime, timedelta

from ingestion.capture import posthog, segment
from ingestion.capture.mapping import corrected_timestamp, event_uuid, parse_time

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def test_clock_skew_is_corrected_from_sent_at():
    # The device's clock runs 2 hours fast; the event happened 30 s before sending.
    happened = corrected_timestamp(timestamp="2026-06-01T14:00:00+00:00",
                                   sent_at="2026-06-01T14:00:30+00:00", offset_ms=None, now=NOW)
    assert happened == NOW - timedelta(seconds=30)


def test_offset_without_timestamps_counts_back_from_receipt():
    assert corrected_timestamp(timestamp=None, sent_at=None, offset_ms=1500, now=NOW) == \
        NOW - timedelta(milliseconds=1500)


def test_timestamp_alone_is_taken_as_sent_and_naive_is_utc():
    assert corrected_timestamp(timestamp="2026-05-31T08:00:00", sent_at=None, offset_ms=None,
                               now=NOW) == datetime(2026, 5, 31, 8, tzinfo=UTC)


def test_ids_are_the_sdks_or_derived_stably():
    given = str(uuid.uuid4())
    assert event_uuid(given, protocol="posthog", message={}, user_id="u") == uuid.UUID(given)
    assert event_uuid("ajs-next-123", protocol="segment", message={}, user_id="u") == \
        event_uuid("ajs-next-123", protocol="segment", message={"other": 1},
                   user_id="u")
    timed = {"a": 1, "timestamp": "2026-01-05T10:00:00Z"}
    # A resend of a timed message: its transport fields changed, its content did not.
    assert event_uuid(None, protocol="segment", message=timed, user_id="u") == \
        event_uuid(None, protocol="segment", message={**timed, "sentAt": "2026-01-05T10:01Z"},
                   user_id="u")
    assert event_uuid(None, protocol="segment", message=timed, user_id="u") != \
        event_uuid(None, protocol="segment", message={**timed, "a": 2}, user_id="u")
    # Two cookieless visitors' timed messages: the same content, other users.
    assert event_uuid(None, protocol="posthog", message=timed, user_id="visitor-1") != \
        event_uuid(None, protocol="posthog", message=timed, user_id="visitor-2")
    # Without a time, the same content sent twice is two events.
    assert event_uuid(None, protocol="posthog", message={"event": "logged_in"}, user_id="u") != \
        event_uuid(None, protocol="posthog", message={"event": "logged_in"}, user_id="u")


def test_posthog_identify_links_the_anonymous_id_and_pageview_with_product_is_a_view():
    batch = posthog.translate([
        {"event": "$identify", "distinct_id": "u1",
         "properties": {"$anon_distinct_id": "anon-1", "$set": {"plan": "pro"}}},
        {"event": "$pageview", "distinct_id": "u1",
         "properties": {"product_id": "sku-9", "$current_url": "https://shop/p/9"}},
        {"event": "$pageview", "distinct_id": "u1", "properties": {"$current_url": "/"}},
    ], sent_at=None, now=NOW)
    assert batch.links == [("anon-1", "u1")]
    assert batch.traits == {"u1": {"plan": "pro"}}
    assert [(e["type"], e.get("item_id")) for e in batch.events] == [
        ("$identify", None), ("view", "sku-9"), ("$pageview", None)]


def test_set_once_keeps_the_first_value_of_a_batch_and_set_the_last():
    batch = posthog.translate([
        {"event": "$pageview", "distinct_id": "u1",
         "properties": {"$set_once": {"first_page": "/a"}, "$set": {"plan": "free"}}},
        {"event": "$pageview", "distinct_id": "u1",
         "properties": {"$set_once": {"first_page": "/b", "source": "ads"},
                        "$set": {"plan": "pro"}}},
    ], sent_at=None, now=NOW)
    assert batch.traits_once == {"u1": {"first_page": "/a", "source": "ads"}}
    assert batch.traits == {"u1": {"plan": "pro"}}


def test_digits_too_many_for_a_time_are_no_time():
    assert parse_time("9" * 5000) is None
    assert corrected_timestamp(timestamp="2026-05-31T08:00:00Z", sent_at="9" * 5000,
                               offset_ms=None, now=NOW) == datetime(2026, 5, 31, 8, tzinfo=UTC)


def test_a_time_of_sending_in_digits_reads_as_epoch_milliseconds():
    # posthog-js's `_`, from a device clock 2 hours fast.
    device_now = NOW + timedelta(hours=2)
    assert corrected_timestamp(timestamp=(device_now - timedelta(seconds=5)).isoformat(),
                               sent_at=str(int(device_now.timestamp() * 1000)), offset_ms=None,
                               now=NOW) == NOW - timedelta(seconds=5)


def test_commerce_names_match_ignoring_case_and_underscores_and_settings_override(settings):
    batch = posthog.translate([{"event": "product_added", "distinct_id": "u",
                                "properties": {"sku": "s-1"}}], sent_at=None, now=NOW)
    assert batch.events[0]["type"] == "add_to_cart"
    settings.CAPTURE_EVENT_TYPES = {"Wishlisted": "click"}
    batch = segment.translate([{"type": "track", "userId": "u", "event": "Wishlisted",
                                "properties": {"product_id": "s-1"}},
                               {"type": "track", "userId": "u", "event": "Product Added",
                                "properties": {"product_id": "s-1"}}], sent_at=None, now=NOW)
    assert [e["type"] for e in batch.events] == ["click", "Product Added"]


def test_a_commerce_event_without_a_product_keeps_its_name_and_rec_id_is_kept():
    rec = uuid.uuid4()
    batch = segment.translate([
        {"type": "track", "userId": "u", "event": "Product Viewed", "properties": {}},
        {"type": "track", "userId": "u", "event": "Product Clicked",
         "properties": {"product_id": "p", "rec_id": str(rec)}},
        {"type": "track", "userId": "u", "event": "Product Clicked",
         "properties": {"product_id": "p", "rec_id": "not-a-uuid"}}], sent_at=None, now=NOW)
    assert [(e["type"], e["rec_id"]) for e in batch.events] == [
        ("Product Viewed", None), ("click", rec), ("click", None)]
    assert batch.events[2]["properties"]["rec_id"] == "not-a-uuid"
