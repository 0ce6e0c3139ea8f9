"""Times every analytics endpoint over a synthetic event log in PostgreSQL, on raw events
and on the rollups side by side.

    DATABASE_URL=postgres://USER@HOST:5432/DB python -m benchmarks.analytics \\
        --events 1000000 [--json OUT] [--repeat 5] [--raw-repeat N] \\
        [--database lodestar_analytics_bench]

The events go into a separate database (default ``lodestar_analytics_bench_<events>``,
created beside the one DATABASE_URL names, which is never touched). It is migrated and
seeded inside PostgreSQL with ``INSERT ... SELECT generate_series`` (no rows cross the
wire; the same point as COPY, without a client-side file): 200,000 users, 100,000 items in
25 categories, 180 days, in sessions of 1-15 events (8 on average) on items mostly of one
category, as shoppers browse. Events are stored in time order, as a live shop's table is
written in the order they arrive (a seed in random order made every range scan read the
whole table), and vacuumed, as autovacuum leaves a live table. A database that already
holds exactly ``--events`` events is reused. The run then
1. rolls up the whole history (timed),
2. stores 10,000 new events through the ingestion service in batches of 500, rolling up
   after each batch (the worst case), timing both: the steady-state cost of the rollups
   per 1,000 events against the cost of storing them; then 10,000 more, posted to the
   events API in batches of 500 as a client app sends them (timed: what ingesting them
   costs the web process and the database), rolled up in one update, as beat's run once a
   minute finds them,
3. stores 1,000 more and leaves them to the raw tail, as a dashboard finds it between two
   updates,
4. requests each endpoint through Django's test client as a logged-in admin with its
   default parameters (the last 30 days) and in the variants the dashboards also use (the
   whole 120 days among them), once to warm up and ``--repeat`` times timed, on the rollups;
   then again with ANALYTICS_USE_ROLLUPS off (``--raw-repeat`` times), the raw path.
The rollups count the events' ``plan`` property per day (ANALYTICS_ROLLUP_PROPERTIES, unless
the environment sets it), which the breakdown by a property and the filter on it read.
Statements run without ANALYTICS_STATEMENT_TIMEOUT_SECONDS's limit, unless the environment
sets one.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import environ
import psycopg
from psycopg import sql

ENDPOINTS = {
    "overview": "/api/v1/analytics/overview",
    "funnel": "/api/v1/analytics/funnel?steps=view,add_to_cart,purchase&window_days=7",
    "retention": "/api/v1/analytics/retention",
    "items": "/api/v1/analytics/items",
    "sentiment": "/api/v1/analytics/sentiment",
    "recommendations": "/api/v1/analytics/recommendations",
    "trends": "/api/v1/analytics/trends?events=view,purchase",
    "lifecycle": "/api/v1/analytics/lifecycle",
    "stickiness": "/api/v1/analytics/stickiness",
    "paths": "/api/v1/analytics/paths?event=add_to_cart",
    # user-1 is the most active seeded user (user ids are drawn with a power law).
    "user timeline": "/api/v1/analytics/users/user-1/timeline",
}
# What the dashboards also ask for: the funnel page's category breakdown (when ticked), the
# costliest ordering, one category, trends variants and a deeper path. Each of these and each
# endpoint (but the user timeline, which has no range) is timed over the default 30 days and
# over 120 days.
VARIANTS = {
    "funnel by category": ENDPOINTS["funnel"] + "&breakdown=category",
    "items by conversion": ENDPOINTS["items"] + "?order_by=conversion",
    "overview, one category": ENDPOINTS["overview"] + "?category=category-3",
    "retention, one category": ENDPOINTS["retention"] + "?category=category-3",
    "items, one category": ENDPOINTS["items"] + "?category=category-3",
    "paths after the first event, 5 steps": "/api/v1/analytics/paths?steps=5",
    "paths before purchase, 5 steps": ("/api/v1/analytics/paths?event=purchase"
                                       "&direction=before&steps=5"),
    "trends, revenue by category, weekly": (ENDPOINTS["trends"]
                                            + "&measure=sum&breakdown=category&interval=week"),
    "trends, persons by category": ENDPOINTS["trends"] + "&measure=users&breakdown=category",
    "trends, by a property, weekly, compared": (ENDPOINTS["trends"]
                                                 + "&breakdown=plan&interval=week&compare=true"),
    "trends, where a property is a value": ENDPOINTS["trends"] + "&where=plan%3Dpro",
    "trends, where a property is a value, by category": (ENDPOINTS["trends"]
                                                         + "&where=plan%3Dpro&breakdown=category"),
    "trends, by a property, one category": (ENDPOINTS["trends"]
                                            + "&breakdown=plan&category=category-3"),
    "lifecycle, daily": ENDPOINTS["lifecycle"] + "?interval=day",
    "stickiness, monthly": ENDPOINTS["stickiness"] + "?interval=month",
}
NO_RANGE = {"user timeline"}
SPAN_DAYS = 180
LONG_RANGE_DAYS = 120
USERS = 200_000
ITEMS = 100_000
CATEGORIES = 25
IMPRESSIONS_PER_EVENT = 0.1
MEAN_SESSION_EVENTS = 8
STEADY_STATE_EVENTS = 10_000
STEADY_STATE_BATCH = 500
TAIL_EVENTS = 1_000

# Sessions: a power-law user, a start time, a category and 1-15 events a minute or so apart;
# 80% of a session's items are of its category. Event mix: the first is a view, the rest by
# cumulative thresholds on random() for view, click, add_to_cart, purchase, rating, review.
# About 30% of clicks and purchases carry a rec_id of a stored impression. A user's events
# carry their plan and browser as properties (one user in 20 none), as an SDK sends them.
SEED_SQL = """
INSERT INTO ingestion_item (item_id, title, category, tags, attributes, is_active,
                            created_at, updated_at)
SELECT 'sku-' || n, 'Item ' || n, 'category-' || (n % {categories}), '[]', '{{}}', true,
       now(), now()
FROM generate_series(1, {items}) AS n;

INSERT INTO ingestion_enduser (user_id, traits)
SELECT 'user-' || n, '{{}}' FROM generate_series(1, {users}) AS n;

INSERT INTO recommender_modelversion (kind, name, status, metrics, baseline_metrics, params,
    data_counts, artifact_path, checksum, traffic_percent, created_at)
VALUES ('recommender', 'bench-v1', 'retired', '{{}}', '{{}}', '{{}}', '{{}}', 'a', 'a', 0, now()),
       ('recommender', 'bench-v2', 'active', '{{}}', '{{}}', '{{}}', '{{}}', 'b', 'b', 0, now());

INSERT INTO recommender_impression (rec_id, user_id, item_ids, model_version_id, strategy,
                                    endpoint, created_at)
SELECT md5('impression-' || n)::uuid, 'user-' || (1 + n % {users}), '[]',
       CASE WHEN n % 10 = 0 THEN NULL
            ELSE (SELECT id FROM recommender_modelversion
                  WHERE name = CASE WHEN n % 2 = 0 THEN 'bench-v1' ELSE 'bench-v2' END) END,
       CASE WHEN n % 10 = 0 THEN 'popular' ELSE 'two_tower' END,
       'recommendations', now() - random() * interval '{span} days'
FROM generate_series(1, {impressions}) AS n;

INSERT INTO ingestion_event (event_id, type, user_id, item_id, timestamp, received_at, value,
    text, properties, rec_id, sentiment_score, sentiment_label, sentiment_model)
SELECT gen_random_uuid(), kind, user_pk, item_pk, happened, happened,
       CASE kind WHEN 'purchase' THEN round((5 + random() * 95)::numeric, 2)
                 WHEN 'rating' THEN 1 + floor(random() * 5)
                 WHEN 'review' THEN 1 + floor(random() * 5) END,
       CASE WHEN kind = 'review' THEN 'synthetic review text' ELSE '' END,
       CASE WHEN user_pk % 20 = 0 THEN '{{}}'::jsonb
            ELSE jsonb_build_object(
                'plan', CASE WHEN user_pk % 20 < 13 THEN 'free' WHEN user_pk % 20 < 18
                             THEN 'pro' ELSE 'team' END,
                '$browser', CASE user_pk % 4 WHEN 0 THEN 'Chrome' WHEN 1 THEN 'Safari'
                                 WHEN 2 THEN 'Firefox' ELSE 'Edge' END) END,
       CASE WHEN kind IN ('click', 'purchase') AND random() < 0.3
            THEN md5('impression-' || (1 + floor(random() * {impressions}))::int)::uuid END,
       CASE WHEN kind = 'review' THEN score END,
       CASE WHEN kind <> 'review' THEN ''
            WHEN score < 0.35 THEN 'negative' WHEN score < 0.6 THEN 'neutral'
            ELSE 'positive' END,
       CASE WHEN kind = 'review' THEN 'bench' ELSE '' END
FROM (
    SELECT CASE WHEN step = 1 OR r < 0.60 THEN 'view' WHEN r < 0.72 THEN 'click'
                WHEN r < 0.82 THEN 'add_to_cart' WHEN r < 0.87 THEN 'purchase'
                WHEN r < 0.92 THEN 'rating' ELSE 'review' END AS kind,
           user_pk,
           (SELECT min(id) FROM ingestion_item) - 1 + CASE
               WHEN random() < 0.8
               THEN 1 + category + {categories} * floor(power(random(), 3)
                                                        * ({items} / {categories}))::int
               ELSE 1 + floor(power(random(), 3) * {items})::int END AS item_pk,
           started + step * interval '70 seconds' AS happened,
           random() AS score
    FROM (SELECT (SELECT min(id) FROM ingestion_enduser)
                     + floor(power(random(), 2) * {users})::int AS user_pk,
                 now() - random() * interval '{span} days' AS started,
                 floor(random() * {categories})::int AS category,
                 1 + floor(random() * 15)::int AS length
          FROM generate_series(1, {sessions}) AS n) AS sessions
    CROSS JOIN LATERAL generate_series(1, sessions.length) AS step
    CROSS JOIN LATERAL (SELECT random() AS r, step AS at_step) AS draw
    LIMIT {events}
) AS generated
ORDER BY happened;

UPDATE ingestion_enduser AS u SET first_seen = seen.first_at, last_seen = seen.last_at
FROM (SELECT user_id, min(timestamp) AS first_at, max(timestamp) AS last_at
      FROM ingestion_event GROUP BY user_id) AS seen
WHERE seen.user_id = u.id;
"""
# Event indexes analytics might like beyond the model's own (ingestion owns the model, so
# they are proposed rather than migrated); --suggested-indexes adds them to the benchmark
# database only, and without it they are dropped. The model's indexes are never dropped:
# ensure_model_indexes recreates any an earlier version of this script removed.
SUGGESTED_INDEXES = {
    "event_time_covering": "ON ingestion_event (timestamp) INCLUDE (user_id, item_id, type, value)",
}
SEEDED_TABLES = ("ingestion_event", "ingestion_enduser", "ingestion_item",
                 "recommender_impression", "recommender_modelversion",
                 "analytics_dailyeventrollup", "analytics_userdayrollup",
                 "analytics_userdayactivity", "analytics_rollupstate")


def bench_database_url(base_url: str, name: str) -> tuple[str, dict[str, Any]]:
    config = environ.Env.db_url_config(base_url)
    if config["ENGINE"] != "django.db.backends.postgresql":
        raise SystemExit("DATABASE_URL must point at PostgreSQL.")
    if config["NAME"] == name:
        raise SystemExit(f"--database must differ from DATABASE_URL's database {name!r}.")
    scheme, _, rest = base_url.partition("://")
    location = rest.split("?", 1)[0].rsplit("/", 1)[0]
    return f"{scheme}://{location}/{name}", config


def create_database(*, config: dict[str, Any], name: str) -> None:
    with psycopg.connect(dbname=config["NAME"], user=config["USER"] or None,
                         password=config["PASSWORD"] or None, host=config["HOST"] or None,
                         port=config["PORT"] or None, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                               [name]).fetchone()
        if not exists:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def seed(*, events: int) -> float:
    """Seeds the database; the Event indexes are dropped first and built after, which is
    several times faster than maintaining them row by row."""
    from django.db import connection, transaction

    from ingestion.models import Event

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE {} RESTART IDENTITY CASCADE".format(", ".join(SEEDED_TABLES)))
        for index in Event._meta.indexes:
            cursor.execute(f"DROP INDEX IF EXISTS {index.name}")
        statements = SEED_SQL.format(
            categories=CATEGORIES, items=ITEMS, users=USERS,
            impressions=max(1, int(events * IMPRESSIONS_PER_EVENT)), events=events,
            sessions=int(events / MEAN_SESSION_EVENTS * 1.15) + 1, span=SPAN_DAYS)
        for statement in statements.split(";\n"):
            if statement.strip():
                cursor.execute(statement)
    ensure_model_indexes()
    with connection.cursor() as cursor:
        # As autovacuum leaves a live table: index-only scans need not visit the heap.
        cursor.execute("VACUUM ANALYZE")
    return time.perf_counter() - started


def ensure_model_indexes() -> None:
    """Creates the Event model's declared indexes that are missing from the database."""
    from django.db import connection

    from ingestion.models import Event

    with connection.cursor() as cursor:
        existing = set(connection.introspection.get_constraints(cursor, Event._meta.db_table))
    with connection.schema_editor() as editor:
        for index in Event._meta.indexes:
            if index.name not in existing:
                editor.add_index(Event, index)


def set_suggested_indexes(*, present: bool) -> None:
    from django.db import connection

    ensure_model_indexes()
    with connection.cursor() as cursor:
        for name, definition in SUGGESTED_INDEXES.items():
            if present:
                cursor.execute(f"CREATE INDEX IF NOT EXISTS {name} {definition}")
            else:
                cursor.execute(f"DROP INDEX IF EXISTS {name}")
        cursor.execute("VACUUM ANALYZE ingestion_event")


def timed_urls() -> dict[str, str]:
    long_start = (date.today() - timedelta(days=LONG_RANGE_DAYS - 1)).isoformat()
    urls = {}
    for name, url in {**ENDPOINTS, **VARIANTS}.items():
        urls[name] = url
        if name not in NO_RANGE:
            urls[f"{name}, 120 days"] = url + ("&" if "?" in url else "?") + f"start={long_start}"
    return urls


def time_endpoints(*, repeat: int, rollups: bool) -> dict[str, dict[str, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client, override_settings

    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(admin)
    results = {}
    with override_settings(ANALYTICS_USE_ROLLUPS=rollups):
        for name, url in timed_urls().items():
            warmup = client.get(url)
            if warmup.status_code != 200:
                raise SystemExit(f"{name}: HTTP {warmup.status_code} {warmup.content[:300]!r}")
            timings = []
            for _ in range(repeat):
                started = time.perf_counter()
                client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            timings.sort()
            # Nearest rank: with 5 runs the p95 is the slowest.
            p95 = timings[min(len(timings) - 1, math.ceil(0.95 * len(timings)) - 1)]
            results[name] = {"p50_ms": round(statistics.median(timings), 1),
                             "p95_ms": round(p95, 1), "runs": repeat}
            print(f"  {'rollups' if rollups else 'raw'}: {name}: "
                  f"{results[name]['p50_ms']:.0f} ms", flush=True)
    return results


def new_events(count: int, *, offset: int) -> list:
    """Events as a client sends them now: sessions of existing users and items, four in
    five of a session's items of its category (as SEED_SQL's sessions)."""
    import uuid

    from django.utils import timezone

    from ingestion.services import EventInput

    now = timezone.now()
    kinds = ("view", "view", "view", "click", "add_to_cart", "purchase")
    items_per_category = ITEMS // CATEGORIES

    def item_number(position: int) -> int:
        if position % 5 == 0:
            # Spread by position // 5: a multiple of 5 times 7919 would always land on
            # items of the same five categories.
            return 1 + (position // 5) * 7919 % ITEMS
        # Item n's category is n % CATEGORIES (SEED_SQL).
        category = position // MEAN_SESSION_EVENTS % CATEGORIES
        return category + CATEGORIES * (1 + position * 7919 % (items_per_category - 1))

    def user_number(n: int) -> int:
        return 1 + (offset + n) // MEAN_SESSION_EVENTS % USERS

    return [EventInput(event_id=uuid.uuid4(), type=kinds[n % len(kinds)],
                       user_id=f"user-{user_number(n)}",
                       item_id=f"sku-{item_number(offset + n)}",
                       timestamp=now - timedelta(seconds=count - n),
                       value=20.0 if kinds[n % len(kinds)] == "purchase" else None,
                       properties=user_properties(user_number(n)))
            for n in range(count)]


def user_properties(number: int) -> dict[str, str]:
    """user-`number`'s properties, as SEED_SQL gives them by user_pk (user-n's is n: the seed
    restarts the table's ids)."""
    if number % 20 == 0:
        return {}
    plan = "free" if number % 20 < 13 else "pro" if number % 20 < 18 else "team"
    return {"plan": plan, "$browser": ("Chrome", "Safari", "Firefox", "Edge")[number % 4]}


def post_events(events: list) -> float:
    """Posts the events to the events API in batches of STEADY_STATE_BATCH, as a client app
    sends them; returns the seconds the requests took (the bodies are built untimed)."""
    from rest_framework.test import APIClient

    from accounts.services import create_api_key

    _, key = create_api_key(name="analytics benchmark")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    seconds = 0.0
    for start in range(0, len(events), STEADY_STATE_BATCH):
        body = json.dumps({"batch": [
            {"event_id": str(event.event_id), "type": event.type, "user_id": event.user_id,
             "item_id": event.item_id, "timestamp": event.timestamp.isoformat(),
             "value": event.value, "properties": event.properties}
            for event in events[start:start + STEADY_STATE_BATCH]]})
        started = time.perf_counter()
        response = client.post("/api/v1/events", data=body, content_type="application/json")
        seconds += time.perf_counter() - started
        accepted = response.json().get("accepted")
        if accepted != min(STEADY_STATE_BATCH, len(events) - start):
            raise SystemExit(f"The events API accepted {accepted} of a batch: {response.content!r}")
    return seconds


def rollup_costs() -> dict[str, float]:
    """The whole history rolled up; then the steady state: ingesting STEADY_STATE_EVENTS
    new events against rolling them up, and TAIL_EVENTS more left for the raw tail."""
    from django.test import override_settings
    from django.utils import timezone

    from analytics import services
    from analytics.receivers import schedule_rollup
    from ingestion.services import store_events
    from ingestion.signals import events_stored

    # The benchmark runs the updates itself (with eager Celery, ingestion's own would run
    # inside the ingestion timings).
    events_stored.disconnect(schedule_rollup)
    services.reset_rollups()
    started = time.perf_counter()
    history = services.roll_up_new_events(now=timezone.now())
    full_seconds = time.perf_counter() - started

    # Immediately due: the steady-state events are rolled up as soon as they are stored.
    with override_settings(ANALYTICS_ROLLUP_LAG_SECONDS=0):
        events = new_events(STEADY_STATE_EVENTS, offset=0)
        ingest_seconds = rollup_seconds = 0.0
        rolled = 0
        for start in range(0, len(events), STEADY_STATE_BATCH):
            started = time.perf_counter()
            store_events(events=events[start:start + STEADY_STATE_BATCH],
                         received_at=None)
            ingest_seconds += time.perf_counter() - started
            # One update per stored batch: the worst case (beat runs one a minute).
            started = time.perf_counter()
            rolled += services.roll_up_new_events(now=timezone.now()).events
            rollup_seconds += time.perf_counter() - started
        # What beat's run once a minute does: one update for everything ingested since.
        api_ingest_seconds = post_events(new_events(STEADY_STATE_EVENTS,
                                                    offset=STEADY_STATE_EVENTS))
        started = time.perf_counter()
        rolled_at_once = services.roll_up_new_events(now=timezone.now()).events
        one_update_seconds = time.perf_counter() - started
    store_events(events=new_events(TAIL_EVENTS, offset=2 * STEADY_STATE_EVENTS),
                 received_at=None)
    return {
        "history_events": history.events,
        "history_rollup_seconds": round(full_seconds, 1),
        "steady_state_events": STEADY_STATE_EVENTS,
        "steady_state_rolled_up": rolled,
        "ingest_ms_per_1000_events": round(1000 * ingest_seconds * 1000 / STEADY_STATE_EVENTS, 1),
        "rollup_ms_per_1000_events": round(1000 * rollup_seconds * 1000 / STEADY_STATE_EVENTS, 1),
        "rollup_share_of_ingest": round(rollup_seconds / ingest_seconds, 3),
        "one_update_events": rolled_at_once,
        "one_update_ms_per_1000_events": round(1000 * one_update_seconds * 1000
                                               / max(rolled_at_once, 1), 1),
        "one_update_share_of_ingest": round(one_update_seconds / ingest_seconds, 3),
        "api_ingest_ms_per_1000_events": round(1000 * api_ingest_seconds * 1000
                                               / STEADY_STATE_EVENTS, 1),
        "one_update_share_of_api_ingest": round(one_update_seconds / api_ingest_seconds, 3),
        "raw_tail_events": services.pending_events(),
    }


def table_sizes() -> dict[str, int]:
    from django.db import connection

    with connection.cursor() as cursor:
        return {table: cursor.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("ingestion_event", "analytics_dailyeventrollup",
                              "analytics_userdayrollup", "analytics_userdayactivity")}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--raw-repeat", type=int, default=None,
                        help="timed runs of the raw path (default --repeat)")
    parser.add_argument("--database", default=None,
                        help="database to create and seed (never DATABASE_URL's own); "
                             "default lodestar_analytics_bench_<events>")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--suggested-indexes", action="store_true",
                        help="time with the proposed Event indexes (SUGGESTED_INDEXES) added; "
                             "without it they are dropped")
    args = parser.parse_args(argv)
    database = args.database or f"lodestar_analytics_bench_{args.events}"

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url:
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server, e.g. "
                         "postgres://postgres@127.0.0.1:5432/postgres")
    url, config = bench_database_url(base_url, database)
    create_database(config=config, name=database)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    os.environ.setdefault("ANALYTICS_ROLLUP_PROPERTIES", "plan")
    # The raw path is timed however long it takes (the app's default stops a statement at
    # 30 s, which the slowest VMs' raw figures came near).
    os.environ.setdefault("ANALYTICS_STATEMENT_TIMEOUT_SECONDS", "0")

    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment()
    call_command("migrate", verbosity=0)

    from ingestion.models import Event

    seconds = 0.0
    stored = Event.objects.count()
    # A database seeded by an earlier run holds its steady-state events too: they go.
    if not args.events <= stored <= args.events + 2 * STEADY_STATE_EVENTS + TAIL_EVENTS:
        print(f"Seeding {args.events:,} events into {database}...", flush=True)
        seconds = seed(events=args.events)
        print(f"Seeded in {seconds:.1f}s", flush=True)
    elif stored > args.events:
        Event.objects.filter(pk__gt=Event.objects.order_by("pk")[args.events - 1].pk).delete()
    set_suggested_indexes(present=args.suggested_indexes)
    print("Rolling up...", flush=True)
    costs = rollup_costs()
    sizes = table_sizes()
    rollups = time_endpoints(repeat=args.repeat, rollups=True)
    raw = time_endpoints(repeat=args.raw_repeat or args.repeat, rollups=False)

    print(f"\n{'endpoint':<58}{'rollups p50':>12}{'p95':>8}{'raw p50':>10}{'p95':>8}")
    for name in rollups:
        print(f"{name:<58}{rollups[name]['p50_ms']:>12.0f}{rollups[name]['p95_ms']:>8.0f}"
              f"{raw[name]['p50_ms']:>10.0f}{raw[name]['p95_ms']:>8.0f}")
    print("\n" + "\n".join(f"{key}: {value}" for key, value in {**costs, **sizes}.items()))
    results = {"models": {"rollups": rollups, "raw_events": raw}, "rollup_costs": costs,
               "table_rows": sizes, "events": args.events, "database": database,
               "repeat": args.repeat, "raw_repeat": args.raw_repeat or args.repeat,
               "seed_seconds": round(seconds, 1), "suggested_indexes": args.suggested_indexes,
               "python": sys.version.split()[0]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
