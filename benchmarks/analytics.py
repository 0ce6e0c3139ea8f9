"""Times every analytics endpoint over a synthetic event log in PostgreSQL.

    DATABASE_URL=postgres://USER@HOST:5432/DB python -m benchmarks.analytics \\
        --events 1000000 [--json OUT] [--repeat 7] [--database lodestar_analytics_bench]

The events go into a separate database (default ``lodestar_analytics_bench``, created beside the one
DATABASE_URL names, which is never touched). It is migrated and seeded inside PostgreSQL
with ``INSERT ... SELECT generate_series`` (no rows cross the wire), spread over the last
120 days; a database that already holds exactly ``--events`` events is reused. Each endpoint
is then requested through Django's test client as a logged-in admin with its default
parameters (the last 30 days), and in the variants the dashboards also use (category
breakdown and filter, ordering by conversion, the whole 120 days), once to warm up and
``--repeat`` times timed.
"""

import argparse
import json
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
# What the dashboards also ask for: the funnel page's category breakdown, the costliest
# ordering, one category, and the whole seeded span (every cohort populated).
VARIANTS = {
    "funnel by category": ENDPOINTS["funnel"] + "&breakdown=category",
    "items by conversion": ENDPOINTS["items"] + "?order_by=conversion",
    "overview, one category": ENDPOINTS["overview"] + "?category=category-3",
    "items, one category": ENDPOINTS["items"] + "?category=category-3",
    "overview, 120 days": ENDPOINTS["overview"] + "?start={span_start}",
    "retention, 120 days": ENDPOINTS["retention"] + "?start={span_start}",
    "recommendations, 120 days": ENDPOINTS["recommendations"] + "?start={span_start}",
    "paths after the first event, 5 steps": "/api/v1/analytics/paths?steps=5",
    "paths before purchase, 5 steps, 120 days": ("/api/v1/analytics/paths?event=purchase&direction=before"
                                                  "&steps=5&start={span_start}"),
    "trends, persons by category": ENDPOINTS["trends"] + "&measure=users&breakdown=category",
    "trends, by a property, weekly, compared": (ENDPOINTS["trends"]
                                                 + "&breakdown=plan&interval=week&compare=true"),
}
SPAN_DAYS = 120
ITEMS = 5_000
CATEGORIES = 25
IMPRESSIONS_PER_EVENT = 0.1
USERS_PER_EVENT = 0.05

# Event mix: cumulative thresholds on random() for view, click, add_to_cart, purchase,
# rating, review. About 30% of clicks and purchases carry a rec_id of a stored impression.
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
SELECT gen_random_uuid(), kind,
       (SELECT min(id) FROM ingestion_enduser) + floor(power(random(), 2) * {users})::int,
       (SELECT min(id) FROM ingestion_item) + floor(power(random(), 3) * {items})::int,
       happened, happened,
       CASE kind WHEN 'purchase' THEN round((5 + random() * 95)::numeric, 2)
                 WHEN 'rating' THEN 1 + floor(random() * 5)
                 WHEN 'review' THEN 1 + floor(random() * 5) END,
       CASE WHEN kind = 'review' THEN 'synthetic review text' ELSE '' END,
       '{{}}',
       CASE WHEN kind IN ('click', 'purchase') AND random() < 0.3
            THEN md5('impression-' || (1 + floor(random() * {impressions}))::int)::uuid END,
       CASE WHEN kind = 'review' THEN score END,
       CASE WHEN kind <> 'review' THEN ''
            WHEN score < 0.35 THEN 'negative' WHEN score < 0.6 THEN 'neutral'
            ELSE 'positive' END,
       CASE WHEN kind = 'review' THEN 'bench' ELSE '' END
FROM (
    SELECT CASE WHEN r < 0.60 THEN 'view' WHEN r < 0.72 THEN 'click'
                WHEN r < 0.82 THEN 'add_to_cart' WHEN r < 0.87 THEN 'purchase'
                WHEN r < 0.92 THEN 'rating' ELSE 'review' END AS kind,
           now() - random() * interval '{span} days' AS happened,
           random() AS score
    FROM (SELECT random() AS r FROM generate_series(1, {events})) AS draws
) AS generated;

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
                 "recommender_impression", "recommender_modelversion")


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
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE {} RESTART IDENTITY CASCADE".format(", ".join(SEEDED_TABLES)))
        statements = SEED_SQL.format(
            categories=CATEGORIES, items=ITEMS, users=max(1, int(events * USERS_PER_EVENT)),
            impressions=max(1, int(events * IMPRESSIONS_PER_EVENT)), events=events,
            span=SPAN_DAYS)
        for statement in statements.split(";\n"):
            if statement.strip():
                cursor.execute(statement)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
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


def time_endpoints(*, repeat: int) -> dict[str, dict[str, float]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    admin, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True, "is_superuser": True})
    client = Client()
    client.force_login(admin)
    span_start = (date.today() - timedelta(days=SPAN_DAYS - 1)).isoformat()
    urls = {**ENDPOINTS, **{name: url.format(span_start=span_start)
                            for name, url in VARIANTS.items()}}
    results = {}
    for name, url in urls.items():
        warmup = client.get(url)
        if warmup.status_code != 200:
            raise SystemExit(f"{name}: HTTP {warmup.status_code} {warmup.content[:300]!r}")
        timings = []
        for _ in range(repeat):
            started = time.perf_counter()
            client.get(url)
            timings.append((time.perf_counter() - started) * 1000)
        results[name] = {"p50_ms": round(statistics.median(timings), 1),
                         "max_ms": round(max(timings), 1)}
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--database", default="lodestar_analytics_bench",
                        help="database to create and seed (never DATABASE_URL's own)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--suggested-indexes", action="store_true",
                        help="time with the proposed Event indexes (SUGGESTED_INDEXES) added; "
                             "without it they are dropped")
    args = parser.parse_args(argv)

    base_url = os.environ.get("DATABASE_URL", "")
    if not base_url:
        raise SystemExit("Set DATABASE_URL to a PostgreSQL server, e.g. "
                         "postgres://postgres@127.0.0.1:5432/postgres")
    url, config = bench_database_url(base_url, args.database)
    create_database(config=config, name=args.database)
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")

    import django
    from django.core.management import call_command
    from django.test.utils import setup_test_environment

    django.setup()
    setup_test_environment()
    call_command("migrate", verbosity=0)

    from ingestion.models import Event

    seconds = 0.0
    if Event.objects.count() != args.events:
        print(f"Seeding {args.events:,} events into {args.database}...", flush=True)
        seconds = seed(events=args.events)
        print(f"Seeded in {seconds:.1f}s", flush=True)
    set_suggested_indexes(present=args.suggested_indexes)
    endpoints = time_endpoints(repeat=args.repeat)

    print(f"\n{'endpoint':<28}{'p50 ms':>10}{'max ms':>10}")
    for name, timing in endpoints.items():
        print(f"{name:<28}{timing['p50_ms']:>10.1f}{timing['max_ms']:>10.1f}")
    results = {"endpoints": endpoints, "events": args.events, "database": args.database,
               "repeat": args.repeat, "seed_seconds": round(seconds, 1),
               "suggested_indexes": args.suggested_indexes,
               "python": sys.version.split()[0]}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
