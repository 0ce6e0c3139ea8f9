"""Recommendation serving latency and throughput over real HTTP, next to a trivial endpoint.

    python -m benchmarks.serving [--items 100000] [--users 50000] [--requests 3000]
                                 [--concurrency 4] [--workers 2] [--threads 2]
                                 [--database-url URL] [--json OUT]

What it does, in one run:

1. (Re)creates its own PostgreSQL database (default ``lodestar_serving_bench``; it refuses
   ``test``, ``postgres`` and ``template*``), migrates it and creates an API key.
2. Seeds a shop with COPY: ``--items`` catalog items in 200 categories, ``--users`` end
   users and ~20 interactions per user (1M events by default), each user mostly within
   a few "home" categories, items Zipf-skewed within a category.
3. Trains a two-tower model with ``recommender.ml.two_tower.train_two_tower`` on a sample
   of users (one short epoch: what is measured is the serving path, not model quality),
   with the whole catalog as candidate features, so the served item matrix covers every
   item (items x 32 floats, the default width). Registers it as the active version under
   the benchmark's own MODEL_STORE.
4. Starts gunicorn (production settings, gthread workers) on a free 127.0.0.1 port, warms
   it up (model load, catalog view), then times ``--requests`` ``GET
   /api/v1/recommendations`` for random known users from ``--concurrency`` keep-alive client
   threads, then the same number of ``GET /healthz`` on the same server.

Targets: recommendations p99 < 50 ms and >= 50% of the trivial endpoint's requests/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg

from benchmarks.ingest import (
    BackendCpuSampler,
    Server,
    _cpu_model,
    machine_busy_seconds,
    manage,
    recreate_database,
    server_env,
)
from benchmarks.output import publish

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/lodestar_serving_bench"
TARGET_P99_MS = 50.0
TARGET_RATIO = 0.5
CATEGORIES = 200
EVENTS_PER_USER = 20
EVENT_TYPES = np.array(["view", "click", "add_to_cart", "purchase"])
EVENT_TYPE_SHARES = np.array([0.70, 0.20, 0.06, 0.04])


# --------------------------------------------------------------------------- data


def generate_shop(items: int, users: int, seed: int = 11) -> dict[str, np.ndarray]:
    """Catalog and interactions as arrays (item/user indices, type codes, seconds)."""
    rng = np.random.default_rng(seed)
    item_category = rng.integers(0, CATEGORIES, size=items)
    by_category = [np.flatnonzero(item_category == c) for c in range(CATEGORIES)]
    # Users favour 2 home categories (80% of their events); the rest is anywhere.
    homes = rng.integers(0, CATEGORIES, size=(users, 2))
    n = users * EVENTS_PER_USER
    event_user = np.repeat(np.arange(users), EVENTS_PER_USER)
    in_home = rng.random(n) < 0.8
    home_pick = homes[event_user, rng.integers(0, 2, size=n)]
    event_item = rng.integers(0, items, size=n)
    ranks = np.minimum(rng.zipf(1.3, size=n) - 1, 10_000)
    for c in range(CATEGORIES):
        members = by_category[c]
        chosen = in_home & (home_pick == c)
        if len(members) and chosen.any():
            event_item[chosen] = members[ranks[chosen] % len(members)]
    event_type = rng.choice(len(EVENT_TYPES), size=n, p=EVENT_TYPE_SHARES)
    # Each user's events are in time order over the last 60 days.
    start = rng.uniform(0, 50 * 86400, size=users)
    offsets = np.cumsum(rng.uniform(60, 36000, size=(users, EVENTS_PER_USER)), axis=1)
    event_seconds = (start[:, None] + offsets).reshape(-1)
    return {"item_category": item_category, "event_user": event_user,
            "event_item": event_item, "event_type": event_type,
            "event_seconds": event_seconds}


def _copy_text(conn: psycopg.Connection, table: str, columns: Sequence[str],
               lines: Sequence[str], chunk: int = 100_000) -> None:
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN"
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for begin in range(0, len(lines), chunk):
            copy.write("".join(lines[begin:begin + chunk]))
    conn.commit()


def seed_database(database_url: str, shop: dict[str, np.ndarray]) -> dict[str, float]:
    """COPYs items, users and events; returns seconds per table."""
    base = datetime.now(UTC) - timedelta(days=60)
    stamp = base.isoformat()
    n_items = len(shop["item_category"])
    n_users = int(shop["event_user"].max()) + 1
    timings = {}
    with psycopg.connect(database_url) as conn:
        began = time.perf_counter()
        _copy_text(conn, "ingestion_item",
                   ["item_id", "title", "category", "tags", "attributes", "is_active",
                    "created_at", "updated_at"],
                   [f"sku-{i:06d}\tProduct {i} of category {c}\tcat-{c:03d}\t[]\t{{}}\tt\t"
                    f"{stamp}\t{stamp}\n" for i, c in enumerate(shop["item_category"].tolist())])
        timings["items"] = time.perf_counter() - began
        began = time.perf_counter()
        _copy_text(conn, "ingestion_enduser", ["user_id", "traits", "first_seen", "last_seen"],
                   [f"user-{u:06d}\t{{}}\t{stamp}\t{stamp}\n" for u in range(n_users)])
        timings["users"] = time.perf_counter() - began
        item_pk = dict(conn.execute("SELECT item_id, id FROM ingestion_item").fetchall())
        user_pk = dict(conn.execute("SELECT user_id, id FROM ingestion_enduser").fetchall())
        conn.commit()
        item_pks = np.array([item_pk[f"sku-{i:06d}"] for i in range(n_items)])
        user_pks = np.array([user_pk[f"user-{u:06d}"] for u in range(n_users)])
        began = time.perf_counter()
        epoch = base.timestamp()
        times = [datetime.fromtimestamp(epoch + s, UTC).isoformat()
                 for s in shop["event_seconds"].tolist()]
        types = EVENT_TYPES[shop["event_type"]].tolist()
        lines = [f"{uuid.uuid4()}\t{t}\t{u}\t{i}\t{ts}\t{ts}\t\\N\t\t{{}}\t\\N\t\\N\t\t\n"
                 for t, u, i, ts in zip(types, user_pks[shop["event_user"]].tolist(),
                                        item_pks[shop["event_item"]].tolist(), times)]
        _copy_text(conn, "ingestion_event",
                   ["event_id", "type", "user_id", "item_id", "timestamp", "received_at",
                    "value", "text", "properties", "rec_id", "sentiment_score",
                    "sentiment_label", "sentiment_model"], lines)
        conn.execute("ANALYZE")
        conn.commit()
        timings["events"] = time.perf_counter() - began
    return timings


def train_and_register(shop: dict[str, np.ndarray], *, sample_users: int, epochs: int,
                       name: str) -> dict[str, Any]:
    """Trains on a sample of users with the whole catalog as candidates, saves the artifact
    under MODEL_STORE and registers it as the active recommender version (Django is set up
    by the caller against the benchmark database)."""
    import pandas as pd

    from recommender.artifacts import artifact_directory, directory_checksum
    from recommender.ml.two_tower import TwoTowerConfig, train_two_tower
    from recommender.selectors import active_version
    from recommender.services import register_version

    users = int(shop["event_user"].max()) + 1
    rng = np.random.default_rng(3)
    sampled = np.zeros(users, dtype=bool)
    sampled[rng.choice(users, size=min(sample_users, users), replace=False)] = True
    rows = sampled[shop["event_user"]]
    weights = {"view": 1.0, "click": 2.0, "add_to_cart": 3.0, "purchase": 4.0}
    interactions = pd.DataFrame({
        "user_id": [f"user-{u:06d}" for u in shop["event_user"][rows].tolist()],
        "item_id": [f"sku-{i:06d}" for i in shop["event_item"][rows].tolist()],
        "timestamp": shop["event_seconds"][rows],
        "weight": pd.Series(EVENT_TYPES[shop["event_type"][rows]]).map(weights).to_numpy(
            dtype=np.float32),
    })
    categories = shop["item_category"]
    items = pd.DataFrame({
        "item_id": [f"sku-{i:06d}" for i in range(len(categories))],
        "category": [f"cat-{c:03d}" for c in categories.tolist()],
        "title": [f"Product {i} of category {c}" for i, c in enumerate(categories.tolist())],
    })
    began = time.perf_counter()
    model, report = train_two_tower(interactions, items=items, config=TwoTowerConfig(
        max_epochs=epochs, validation_users=500, patience=1))
    train_seconds = time.perf_counter() - began
    directory = artifact_directory(kind="recommender", name=name)
    model.save(directory)
    register_version(kind="recommender", name=name, artifact_path=str(directory),
                     checksum=directory_checksum(directory),
                     metrics=json.loads(json.dumps(report.get("best_validation") or {})),
                     baseline_metrics={}, params={}, data_counts={}, data_window=None,
                     promote_if=True, reason="serving benchmark",
                     compared_with=active_version(kind="recommender"))
    return {"train_seconds": round(train_seconds, 1),
            "trained_on_interactions": int(len(interactions)),
            "served_items": int(len(model.item_ids)),
            "embedding_dim": int(model.item_embeddings.shape[1]),
            "artifact_mb": round(sum(p.stat().st_size for p in directory.iterdir()) / 2**20, 1)}


# --------------------------------------------------------------------------- client


def hammer(port: int, paths: Sequence[str], *, concurrency: int,
           headers: dict[str, str]) -> tuple[float, list[float], list[str]]:
    """GETs every path once from `concurrency` keep-alive threads; returns (seconds,
    latencies of 200 responses, failures)."""
    next_index = iter(range(len(paths)))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []
    gate = threading.Barrier(concurrency + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        errors: list[str] = []
        gate.wait()
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            began = time.perf_counter()
            try:
                conn.request("GET", paths[index], headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as error:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                errors.append(f"{paths[index]}: {error!r}")
                continue
            if response.status == 200:
                mine.append(time.perf_counter() - began)
            else:
                errors.append(f"{paths[index]}: HTTP {response.status} {body[:200]!r}")
        conn.close()
        with lock:
            latencies.extend(mine)
            failures.extend(errors)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, latencies, failures


def _summary(seconds: float, latencies: list[float], failures: list[str]) -> dict[str, Any]:
    ordered = np.sort(np.asarray(latencies)) * 1000
    return {
        "requests": len(latencies) + len(failures),
        "failures": len(failures),
        "p50_ms": round(float(np.percentile(ordered, 50)), 2) if len(ordered) else None,
        "p99_ms": round(float(np.percentile(ordered, 99)), 2) if len(ordered) else None,
        "max_ms": round(float(ordered[-1]), 2) if len(ordered) else None,
        "requests_per_second": round(len(latencies) / seconds, 1),
        "failure_examples": failures[:3],
    }


def timed_phase(server: Server, database_url: str, paths: Sequence[str], *,
                concurrency: int, headers: dict[str, str]) -> dict[str, Any]:
    """The latency summary of one endpoint's requests, with the CPU milliseconds each
    request cost the gunicorn processes, the local PostgreSQL backends, this client and
    the whole machine: where the time goes when both cores are busy."""
    backends = BackendCpuSampler(database_url)
    backends.start()
    busy0, _ = machine_busy_seconds()
    web0, client0 = server.cpu_seconds(), time.process_time()
    summary = _summary(*hammer(server.port, paths, concurrency=concurrency, headers=headers))
    busy1, _ = machine_busy_seconds()
    web1, client1 = server.cpu_seconds(), time.process_time()
    per_request = 1000 / max(summary["requests"], 1)
    summary["cpu_ms_per_request"] = {
        "gunicorn": round((web1 - web0) * per_request, 2),
        "postgres": round(backends.finish() * per_request, 2),
        "client": round((client1 - client0) * per_request, 2),
        "machine": round((busy1 - busy0) * per_request, 2),
    }
    return summary


# --------------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = print if not args.quiet else (lambda *a, **k: None)
    database_name = urlsplit(args.database_url).path.lstrip("/")
    log(f"Recreating {database_name} and migrating ...", flush=True)
    recreate_database(args.database_url)
    with tempfile.TemporaryDirectory(prefix="lodestar-serving-bench-") as tmp:
        var_dir = Path(tmp)
        env = server_env(args.database_url, "memory://", var_dir)
        # One BLAS thread per request thread: the 2 cores are shared by the workers.
        env.update({"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "OMP_NUM_THREADS": "1", "MODEL_REFRESH_SECONDS": "5"})
        manage(env, "migrate", "--noinput")
        api_key = manage(env, "create_api_key", "serving-benchmark").strip().splitlines()[-1]

        log(f"Generating and COPYing {args.items:,} items, {args.users:,} users, "
            f"{args.users * EVENTS_PER_USER:,} events ...", flush=True)
        shop = generate_shop(args.items, args.users)
        seed_seconds = seed_database(args.database_url, shop)
        log(f"  seeded in {sum(seed_seconds.values()):.0f} s {seed_seconds}", flush=True)

        log(f"Training a two-tower model on {args.train_users:,} sampled users, "
            f"{args.epochs} epoch(s), all {args.items:,} items as candidates ...", flush=True)
        os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY",
                                               "DATABASE_URL", "MODEL_STORE",
                                               "LODESTAR_VAR_DIR", "CELERY_BROKER_URL",
                                               "DJANGO_ALLOWED_HOSTS", "SECURE_SSL_REDIRECT")})
        import django

        django.setup()
        model = train_and_register(shop, sample_users=args.train_users, epochs=args.epochs,
                                   name="recommender-serving-bench")
        from django.db import connections

        connections.close_all()
        log(f"  {model}", flush=True)

        rng = np.random.default_rng(5)
        users = rng.integers(0, args.users, size=args.requests + args.warmup)
        paths = [f"/api/v1/recommendations?user_id=user-{u:06d}&k=10" for u in users.tolist()]
        headers = {"Authorization": f"Api-Key {api_key}", "Connection": "keep-alive"}
        log(f"Starting gunicorn ({args.workers} workers x {args.threads} threads) ...",
            flush=True)
        with Server(env, workers=args.workers, threads=args.threads,
                    log=Path(args.server_log) if args.server_log else var_dir / "gunicorn.log"
                    ) as server:
            # Warm-up: every worker loads the model and builds its catalog view.
            _, _, warm_failures = hammer(server.port, paths[:args.warmup],
                                         concurrency=args.concurrency, headers=headers)
            if warm_failures:
                raise SystemExit(f"warm-up failed: {warm_failures[:3]}")
            hammer(server.port, ["/healthz"] * 200, concurrency=args.concurrency,
                   headers=headers)
            log(f"Timing {args.requests:,} recommendations, then {args.requests:,} /healthz, "
                f"{args.concurrency} concurrent clients ...", flush=True)
            rec = timed_phase(server, args.database_url, paths[args.warmup:],
                              concurrency=args.concurrency, headers=headers)
            health = timed_phase(server, args.database_url, ["/healthz"] * args.requests,
                                 concurrency=args.concurrency, headers=headers)
            sample = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            sample.request("GET", paths[0], headers=headers)
            example = json.loads(sample.getresponse().read())
            sample.close()

    ratio = rec["requests_per_second"] / health["requests_per_second"]
    met = (rec["p99_ms"] is not None and rec["p99_ms"] < TARGET_P99_MS
           and ratio >= TARGET_RATIO and not rec["failures"])
    return {
        "catalog_items": args.items,
        "users": args.users,
        "events": int(len(shop["event_user"])),
        "model": model,
        "example_response": {"strategy": example.get("strategy"),
                             "model_version": example.get("model_version"),
                             "items": len(example.get("items", []))},
        "concurrency": args.concurrency,
        "gunicorn": {"workers": args.workers, "threads": args.threads,
                     "worker_class": "gthread"},
        "endpoints": {"recommendations": rec, "healthz": health},
        "ratio": round(ratio, 3),
        "seed_seconds": {k: round(v, 1) for k, v in seed_seconds.items()},
        "targets": {"p99_ms": TARGET_P99_MS, "ratio": TARGET_RATIO, "met": met},
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"{r['catalog_items']:,} items x {r['model']['embedding_dim']} served "
        f"({r['model']['served_items']:,} rows), {r['users']:,} users, {r['events']:,} events; "
        f"gunicorn {r['gunicorn']['workers']}x{r['gunicorn']['threads']} gthread, "
        f"{r['concurrency']} clients",
        "",
        f"{'endpoint':18} {'requests':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8}"
        "   CPU ms per request: gunicorn postgres client machine",
    ]
    for name, e in r["endpoints"].items():
        cpu = e["cpu_ms_per_request"]
        lines.append(f"{name:18} {e['requests']:>9,} {e['p50_ms']:>8} {e['p99_ms']:>8} "
                     f"{e['max_ms']:>8} {e['requests_per_second']:>8,.0f}"
                     f"{cpu['gunicorn']:>29} {cpu['postgres']:>8} {cpu['client']:>6} "
                     f"{cpu['machine']:>7}")
    lines += [
        "",
        f"ratio recommendations / healthz throughput: {r['ratio']:.1%}",
        f"failures: {r['endpoints']['recommendations']['failures']} recommendations, "
        f"{r['endpoints']['healthz']['failures']} healthz; example answer "
        f"{r['example_response']}",
        f"server env: OPENBLAS/MKL/OMP_NUM_THREADS=1 (gunicorn threads already run requests in "
        f"parallel; a deployment should set the same); {r['machine']['cpus']} CPUs",
        f"targets (p99 < {TARGET_P99_MS:.0f} ms, >= {TARGET_RATIO:.0%} of healthz req/s): "
        f"{'met' if r['targets']['met'] else 'NOT met'}",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--train-users", type=int, default=5000,
                        help="users whose interactions the model is trained on")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_SERVING_DATABASE_URL",
                                                                 DEFAULT_DATABASE_URL))
    parser.add_argument("--server-log", help="keep gunicorn's log at this path")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    results = run(args)
    publish(format_table(results), results, args.json)
    return 0 if results["targets"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
