"""Event ingestion throughput: the real API over HTTP vs a raw bulk insert into the same table.

    python -m benchmarks.ingest [--events 200000] [--batch 1000] [--clients 4] [--workers 2]
                                [--threads 2] [--database-url URL] [--json OUT]
                                [--protocol posthog|segment|native ...]

What it does, in one run:

1. (Re)creates the benchmark database (default ``lodestar_bench`` on 127.0.0.1; it refuses the
   names ``test``, ``postgres`` and ``template*``) and migrates it with ``manage.py migrate``.
2. Creates an API key with ``manage.py create_api_key``.
3. Generates N shop-like events (views, clicks, add-to-carts, purchases, ratings, reviews,
   searches; Zipf-skewed users and items; increasing timestamps like a live stream; every
   ``event_id`` unique) and pre-serialises them into ``{"batch": [...]}`` bodies.
4. Starts a real gunicorn (``config.wsgi``, production settings, gthread workers) on a free
   port of 127.0.0.1, warms it up, empties the tables, and times ``--clients`` threads that
   POST the bodies to ``/api/v1/events`` over keep-alive ``http.client`` connections.
5. Checks the table holds exactly N events with N distinct ``event_id`` values.
6. Empties the event table and times a raw ``COPY`` of the same N rows (same table, same
   indexes, users and items already present), then, for reference, the service's own
   multi-row ``INSERT ... ON CONFLICT DO NOTHING`` statement sent straight through psycopg.

7. With ``--protocol posthog`` / ``--protocol segment``: empties the tables and posts the same
   events again as that SDK batches them (its message shapes and envelope, gzip on) to its
   batch endpoint (``/batch/``, ``/v1/batch``), checks exactly N are stored, and reports the
   rate against the native run's.

Targets on the 2-core reference machine: >= 10,000 API events/s and API >= 30% of the raw
(COPY) rate; each SDK protocol >= 80% of the native API's rate.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import http.client
import json
import os
import platform
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.output import publish

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/lodestar_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/15"
TARGET_EVENTS_PER_SECOND = 10_000
TARGET_RATIO = 0.30
EVENT_TABLE = "ingestion_event"
# The columns ingestion.services._insert_new_events writes, in its order.
EVENT_COLUMNS = ("event_id", "type", "user_id", "item_id", "timestamp", "received_at", "value",
                 "text", "properties", "rec_id", "sentiment_label", "sentiment_model")

# (type, share) for a shop: mostly views, a long tail of deeper actions.
EVENT_MIX = (("view", 0.60), ("click", 0.17), ("add_to_cart", 0.09), ("search", 0.06),
             ("purchase", 0.04), ("rating", 0.025), ("review", 0.015))
REVIEW_TEXTS = ("Great quality, arrived fast.", "Not what I expected, returned it.",
                "Decent for the price.", "Absolutely love it! Buying another.",
                "Broke after a week. Disappointed.", "Fits well, colour as pictured.")
SEARCH_TERMS = ("running shoes", "rain jacket", "usb-c cable", "coffee grinder", "desk lamp",
                "yoga mat", "backpack", "headphones")


# --------------------------------------------------------------------------- data


def generate_events(n: int, *, users: int, items: int, seed: int = 7) -> list[dict]:
    """N events as a client app would send them; all event_ids unique, timestamps increasing."""
    rng = random.Random(seed)
    types = [t for t, _ in EVENT_MIX]
    weights = [w for _, w in EVENT_MIX]
    # Zipf-like popularity: a few heavy users / bestsellers, a long tail.
    user_weights = [1.0 / (rank + 1) ** 0.8 for rank in range(users)]
    item_weights = [1.0 / (rank + 1) ** 1.0 for rank in range(items)]
    event_types = rng.choices(types, weights, k=n)
    user_ids = rng.choices(range(users), user_weights, k=n)
    item_ids = rng.choices(range(items), item_weights, k=n)
    start = datetime.now(timezone.utc) - timedelta(hours=6)
    step = timedelta(hours=6) / max(n, 1)
    events = []
    for i in range(n):
        event_type = event_types[i]
        event: dict[str, Any] = {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "type": event_type,
            "user_id": f"user-{user_ids[i]}",
            "timestamp": (start + step * i).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if event_type == "search":
            event["properties"] = {"query": rng.choice(SEARCH_TERMS), "results": rng.randint(0, 60)}
        else:
            event["item_id"] = f"sku-{item_ids[i]:06d}"
            if event_type == "view":
                event["properties"] = {"source": rng.choice(("web", "ios", "android")),
                                       "page": rng.choice(("home", "category", "search", "pdp"))}
            elif event_type == "purchase":
                event["value"] = round(rng.uniform(4.99, 249.0), 2)
                event["properties"] = {"currency": "EUR", "quantity": rng.randint(1, 3)}
            elif event_type == "rating":
                event["value"] = rng.randint(1, 5)
            elif event_type == "review":
                event["value"] = rng.randint(1, 5)
                event["text"] = rng.choice(REVIEW_TEXTS)
            if rng.random() < 0.05:
                event["rec_id"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        events.append(event)
    return events


def serialise_batches(events: Sequence[dict], batch: int) -> list[bytes]:
    return [json.dumps({"batch": list(events[i:i + batch])}, separators=(",", ":")).encode()
            for i in range(0, len(events), batch)]


# The SDK event each native event type is sent as (ingestion.capture.mapping's table, read
# backwards); ratings go as reviews without a body, searches under their own name.
SDK_EVENT_NAMES = {"view": "Product Viewed", "click": "Product Clicked",
                   "add_to_cart": "Product Added", "purchase": "Order Completed",
                   "rating": "Product Reviewed", "review": "Product Reviewed",
                   "search": "Products Searched"}


def _sdk_properties(event: dict) -> dict:
    properties = dict(event.get("properties") or {})
    if "item_id" in event:
        properties["product_id"] = event["item_id"]
    if event["type"] == "purchase":
        # A product's price is the catalog's (stable per item), the amount price x quantity.
        quantity = event["properties"]["quantity"]
        price = round(4.99 + int(event["item_id"][4:]) % 200, 2)
        properties = {"order_id": event["event_id"][:8], "currency": "EUR", "products": [
            {"product_id": event["item_id"], "price": price, "quantity": quantity}]}
    elif event["type"] in ("rating", "review"):
        properties["rating"] = event["value"]
        if event.get("text"):
            properties["review_body"] = event["text"]
    if "rec_id" in event:
        properties["rec_id"] = event["rec_id"]
    return properties


def sdk_bodies(events: Sequence[dict], batch: int, *, protocol: str,
               api_key: str) -> list[bytes]:
    """The same events as the posthog or segment-analytics-python library batches them:
    their message shapes, their batch envelope, gzip on (as both are configured with
    ``gzip=True``)."""
    sent_at = datetime.now(timezone.utc).isoformat()
    if protocol == "posthog":
        messages = [{"event": SDK_EVENT_NAMES[e["type"]], "distinct_id": e["user_id"],
                     "uuid": e["event_id"], "timestamp": e["timestamp"],
                     "properties": {**_sdk_properties(e), "$lib": "posthog-python",
                                    "$lib_version": "7.91.1", "$geoip_disable": True},
                     "library": "posthog-python", "library_version": "7.91.1"}
                    for e in events]

        def envelope(chunk):
            return {"api_key": api_key, "batch": chunk, "sent_at": sent_at}
    else:
        messages = [{"type": "track", "event": SDK_EVENT_NAMES[e["type"]], "userId": e["user_id"],
                     "messageId": e["event_id"], "timestamp": e["timestamp"],
                     "properties": _sdk_properties(e),
                     "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
                     "integrations": {}}
                    for e in events]

        def envelope(chunk):
            return {"batch": chunk, "sentAt": sent_at}
    return [gzip.compress(json.dumps(envelope(messages[i:i + batch]),
                                     separators=(",", ":")).encode())
            for i in range(0, len(messages), batch)]


def _native_request(api_key: str) -> tuple[str, dict[str, str]]:
    return "/api/v1/events", {"Authorization": f"Api-Key {api_key}",
                              "Content-Type": "application/json"}


def _posthog_request(api_key: str) -> tuple[str, dict[str, str]]:
    return "/batch/", {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def _segment_request(api_key: str) -> tuple[str, dict[str, str]]:
    basic = base64.b64encode(f"{api_key}:".encode()).decode()
    return "/v1/batch", {"Authorization": f"Basic {basic}", "Content-Type": "application/json",
                         "Content-Encoding": "gzip"}


PROTOCOL_REQUESTS = {"native": _native_request, "posthog": _posthog_request,
                     "segment": _segment_request}
TARGET_PROTOCOL_RATIO = 0.80


# --------------------------------------------------------------------------- database


def _admin_conninfo(database_url: str) -> tuple[str, str]:
    """(conninfo for a maintenance database on the same server, benchmark database name)."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name or name in {"test", "postgres"} or name.startswith("template"):
        raise SystemExit(f"Refusing to use database {name!r} for the benchmark; "
                         "it drops and recreates it.")
    return urlunsplit(parts._replace(path="/postgres")), name


def recreate_database(database_url: str) -> None:
    admin, name = _admin_conninfo(database_url)
    try:
        conn = psycopg.connect(admin, autocommit=True)
    except psycopg.OperationalError:
        conn = psycopg.connect(urlunsplit(urlsplit(admin)._replace(path="/test")),
                               autocommit=True)
    with conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def truncate_ingestion(conn: psycopg.Connection, *, events_only: bool) -> None:
    tables = [EVENT_TABLE] if events_only else [EVENT_TABLE, "ingestion_enduser", "ingestion_item"]
    conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
        sql.SQL(", ").join(sql.Identifier(t) for t in tables)))
    conn.commit()
    # Each timed run starts with the WAL of the one before flushed: otherwise the checkpoint
    # it triggers lands in the next run and the later protocols measure slower.
    conn.execute("CHECKPOINT")
    conn.commit()


def count_events(conn: psycopg.Connection) -> tuple[int, int]:
    total, distinct = conn.execute(
        f"SELECT count(*), count(DISTINCT event_id) FROM {EVENT_TABLE}").fetchone()
    conn.commit()
    return total, distinct


def server_version(conn: psycopg.Connection) -> str:
    return conn.execute("SHOW server_version").fetchone()[0]


# --------------------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(database_url: str, broker_url: str, var_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "SECURE_SSL_REDIRECT": "false",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url,
        "API_THROTTLE_RATE": "1000000/minute",
        "EVENTS_THROTTLE_RATE": "1000000/minute",
        "CELERY_BROKER_URL": broker_url,
        "LODESTAR_VAR_DIR": str(var_dir),
        "MODEL_STORE": str(var_dir / "models"),
        "LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    })
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


class Server:
    """gunicorn serving config.wsgi; stopped (SIGTERM, then SIGKILL) on exit."""

    def __init__(self, env: dict[str, str], *, workers: int, threads: int, log: Path):
        self.port = _free_port()
        self.workers = workers
        self.threads = threads
        self.args = [sys.executable, "-m", "gunicorn", "config.wsgi:application",
                     "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
                     "--worker-class", "gthread", "--threads", str(threads),
                     "--keep-alive", "75", "--timeout", "60", "--log-level", "warning"]
        self.log = log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited with {self.proc.returncode}; see {self.log}:\n"
                                 + self.log.read_text(errors="replace")[-3000:])
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200 and len(self.worker_pids()) >= self.workers:
                    conn.close()
                    return self
                conn.close()
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"gunicorn did not answer /healthz in 180 s; see {self.log}")

    def worker_pids(self) -> list[int]:
        return child_pids(self.proc.pid) if self.proc is not None else []

    def cpu_seconds(self) -> float:
        """User+system CPU of the master and its live workers."""
        pids = [self.proc.pid, *self.worker_pids()] if self.proc else []
        return sum(_proc_cpu_seconds(pid) for pid in pids)

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def child_pids(parent: int) -> list[int]:
    """The live processes whose parent is `parent` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


def _proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_backend_cpu(conn: psycopg.Connection) -> dict[int, float]:
    """CPU seconds so far of every other backend connected to this database (the server's
    connections), by pid; empty when PostgreSQL runs elsewhere."""
    pids = [pid for (pid,) in conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()").fetchall()]
    conn.commit()
    return {pid: _proc_cpu_seconds(pid) for pid in pids}


class BackendCpuSampler(threading.Thread):
    """Samples the CPU of the server's PostgreSQL backends every 0.25 s, so backends that
    close during the run (CONN_MAX_AGE) still count up to their last sample."""

    def __init__(self, database_url: str):
        super().__init__(daemon=True)
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.stop = threading.Event()
        self._sample(initial=True)

    def _sample(self, *, initial: bool = False) -> None:
        for pid, cpu in postgres_backend_cpu(self.conn).items():
            if cpu <= 0.0 and pid in self.last:
                continue  # gone between listing and reading /proc
            self.first.setdefault(pid, cpu if initial else 0.0)
            self.last[pid] = cpu

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self._sample()

    def finish(self) -> float:
        self.stop.set()
        self.join()
        self._sample()
        self.conn.close()
        return sum(cpu - self.first[pid] for pid, cpu in self.last.items())


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    ticks = os.sysconf("SC_CLK_TCK")
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values) - idle) / ticks, sum(values) / ticks


# --------------------------------------------------------------------------- client


@dataclass
class ClientStats:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    retries: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)


def post_batches(port: int, api_key: str, bodies: Sequence[bytes], *, clients: int,
                 protocol: str = "native") -> tuple[float, ClientStats]:
    """Posts every body once (retrying a failed one: the API is idempotent on event_id) from
    `clients` threads, each on its own keep-alive connection; returns (seconds, stats)."""
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    stats = ClientStats()
    path, headers = PROTOCOL_REQUESTS[protocol](api_key)
    headers = {**headers, "Connection": "keep-alive"}
    start_gate = threading.Barrier(clients + 1)

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        start_gate.wait()
        local = ClientStats()
        while True:
            with lock:
                index = next(next_index, None)
            if index is None:
                break
            body = bodies[index]
            for attempt in range(5):
                began = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    response = conn.getresponse()
                    payload = response.read()
                except (OSError, http.client.HTTPException) as error:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                    local.retries += 1
                    last_error = f"batch {index}: {error!r}"
                    continue
                if response.status == 200:
                    local.latencies.append(time.perf_counter() - began)
                    result = json.loads(payload)
                    local.accepted += result["accepted"]
                    local.duplicates += result.get("duplicates", 0)
                    local.rejected += result["rejected"]
                    break
                local.retries += 1
                last_error = f"batch {index}: HTTP {response.status} {payload[:300]!r}"
                time.sleep(0.05 * (attempt + 1))
            else:
                local.failures.append(last_error)
        conn.close()
        with lock:
            stats.accepted += local.accepted
            stats.duplicates += local.duplicates
            stats.rejected += local.rejected
            stats.retries += local.retries
            stats.failures.extend(local.failures)
            stats.latencies.extend(local.latencies)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - began, stats


# --------------------------------------------------------------------------- raw insert


def raw_rows(conn: psycopg.Connection, events: Sequence[dict]) -> list[tuple]:
    """The rows the API stored for `events`, built client-side with the stored user/item pks.

    Users and items of batches the API failed to store are created first, so the raw insert
    always writes all N rows."""
    now = datetime.now(timezone.utc)
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO ingestion_enduser (user_id, traits) VALUES (%s, '{}') "
            "ON CONFLICT (user_id) DO NOTHING",
            [(u,) for u in sorted({e["user_id"] for e in events})])
        cursor.executemany(
            "INSERT INTO ingestion_item (item_id, title, category, tags, attributes, is_active, "
            "created_at, updated_at) VALUES (%s, '', '', '[]', '{}', true, %s, %s) "
            "ON CONFLICT (item_id) DO NOTHING",
            [(i, now, now) for i in sorted({e["item_id"] for e in events if "item_id" in e})])
    conn.commit()
    user_pks = dict(conn.execute("SELECT user_id, id FROM ingestion_enduser").fetchall())
    item_pks = dict(conn.execute("SELECT item_id, id FROM ingestion_item").fetchall())
    conn.commit()
    received_at = datetime.now(timezone.utc)
    rows = []
    for e in events:
        rows.append((
            uuid.UUID(e["event_id"]), e["type"], user_pks[e["user_id"]],
            item_pks[e["item_id"]] if "item_id" in e else None,
            datetime.fromisoformat(e["timestamp"]), received_at,
            float(e["value"]) if "value" in e else None, e.get("text", ""),
            Jsonb(e.get("properties", {})),
            uuid.UUID(e["rec_id"]) if "rec_id" in e else None, "", "",
        ))
    return rows


def time_copy(conn: psycopg.Connection, rows: Sequence[tuple]) -> tuple[float, float]:
    """(seconds, CPU seconds of the PostgreSQL backend) for one COPY of `rows`."""
    truncate_ingestion(conn, events_only=True)
    backend_cpu0 = _proc_cpu_seconds(conn.info.backend_pid)
    statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(EVENT_TABLE), sql.SQL(", ").join(map(sql.Identifier, EVENT_COLUMNS)))
    began = time.perf_counter()
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row(row)
    conn.commit()
    return time.perf_counter() - began, _proc_cpu_seconds(conn.info.backend_pid) - backend_cpu0


def time_multirow_insert(conn: psycopg.Connection, rows: Sequence[tuple],
                         batch: int) -> tuple[float, float]:
    """The statement ingestion.services._insert_new_events builds, one per batch, one
    transaction per batch, sent straight through psycopg."""
    truncate_ingestion(conn, events_only=True)
    backend_cpu0 = _proc_cpu_seconds(conn.info.backend_pid)
    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    row_sql = "(" + ", ".join(["%s"] * len(EVENT_COLUMNS)) + ")"
    began = time.perf_counter()
    with conn.cursor() as cursor:
        for start in range(0, len(rows), batch):
            chunk = rows[start:start + batch]
            statement = (f'INSERT INTO "{EVENT_TABLE}" ({columns}) VALUES '
                         + ", ".join([row_sql] * len(chunk))
                         + ' ON CONFLICT ("event_id") DO NOTHING RETURNING "id", "event_id"')
            cursor.execute(statement, [value for row in chunk for value in row])
            cursor.fetchall()
            conn.commit()
    return time.perf_counter() - began, _proc_cpu_seconds(conn.info.backend_pid) - backend_cpu0


# --------------------------------------------------------------------------- run


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = print if not args.quiet else (lambda *a, **k: None)
    log(f"Generating {args.events:,} events ...", flush=True)
    events = generate_events(args.events, users=args.users, items=args.items)
    bodies = serialise_batches(events, args.batch)
    warmup_events = generate_events(args.batch * max(4, args.clients * 2), users=args.users,
                                    items=args.items, seed=99)
    warmup_bodies = serialise_batches(warmup_events, args.batch)

    log(f"Recreating {urlsplit(args.database_url).path.lstrip('/')} and migrating ...", flush=True)
    recreate_database(args.database_url)
    with tempfile.TemporaryDirectory(prefix="lodestar-bench-") as tmp:
        var_dir = Path(tmp)
        env = server_env(args.database_url, args.broker_url, var_dir)
        manage(env, "migrate", "--noinput")
        api_key = manage(env, "create_api_key", "ingest-benchmark").strip().splitlines()[-1]

        with psycopg.connect(args.database_url) as conn:
            pg_version = server_version(conn)
            log(f"Starting gunicorn ({args.workers} workers x {args.threads} threads) ...",
                flush=True)
            with Server(env, workers=args.workers, threads=args.threads,
                        log=Path(args.server_log) if args.server_log else var_dir / "gunicorn.log"
                        ) as server:
                _, warm = post_batches(server.port, api_key, warmup_bodies, clients=args.clients)
                if warm.failures or warm.retries:
                    log(f"Warm-up: {warm.retries} retried requests, {len(warm.failures)} failed "
                        f"batches, e.g. {(warm.failures or [''])[0][:200]}", flush=True)
                # A cold shop: no events, users or items stored when the timed run starts.
                truncate_ingestion(conn, events_only=False)

                log(f"POSTing {len(bodies)} batches from {args.clients} clients ...", flush=True)
                sampler = BackendCpuSampler(args.database_url)
                sampler.start()
                busy0, total0 = machine_busy_seconds()
                web0, client0 = server.cpu_seconds(), sum(os.times()[:2])
                api_seconds, stats = post_batches(server.port, api_key, bodies,
                                                  clients=args.clients)
                busy1, total1 = machine_busy_seconds()
                web1, client1 = server.cpu_seconds(), sum(os.times()[:2])
                pg_cpu = sampler.finish()
                stored, distinct = count_events(conn)
                protocols = {}
                for protocol in args.protocol:
                    sdk = sdk_bodies(events, args.batch, protocol=protocol, api_key=api_key)
                    truncate_ingestion(conn, events_only=False)
                    log(f"POSTing {len(sdk)} {protocol} batches (gzip) ...", flush=True)
                    seconds, sdk_stats = post_batches(server.port, api_key, sdk,
                                                      clients=args.clients, protocol=protocol)
                    sdk_stored, sdk_distinct = count_events(conn)
                    protocols[protocol] = {
                        "events_per_second": round(args.events / seconds, 1),
                        "ratio_to_native": round(api_seconds / seconds, 3),
                        "stored_exactly_n": sdk_stored == sdk_distinct == args.events,
                        "accepted": sdk_stats.accepted, "rejected": sdk_stats.rejected,
                        "failed_batches": len(sdk_stats.failures),
                        "gzip_bytes_per_event": round(sum(map(len, sdk)) / args.events, 1),
                        "latency_ms_p95": round(_percentile(sdk_stats.latencies, 0.95) * 1000,
                                                1)}

            exact = stored == args.events and distinct == args.events
            log(f"Stored {stored:,} events ({distinct:,} distinct event_ids): "
                f"{'exactly N' if exact else 'MISMATCH'}", flush=True)

            log("Raw COPY of the same rows ...", flush=True)
            rows = raw_rows(conn, events)
            client_cpu0 = sum(os.times()[:2])
            copy_seconds, copy_pg_cpu = time_copy(conn, rows)
            copy_client_cpu = sum(os.times()[:2]) - client_cpu0
            copy_count, _ = count_events(conn)
            log("Raw multi-row INSERT ... ON CONFLICT of the same rows ...", flush=True)
            insert_seconds, insert_pg_cpu = time_multirow_insert(conn, rows, args.batch)
            insert_count, _ = count_events(conn)

    # Machine-wide CPU over the API run (cores busy on average), split by who used it.
    interval = api_seconds
    cpus = os.cpu_count() or 1
    machine_busy = (busy1 - busy0)
    per_k = 1000 / args.events
    api_rate = args.events / api_seconds
    copy_rate = copy_count / copy_seconds
    insert_rate = insert_count / insert_seconds
    return {
        "events": args.events,
        "batch": args.batch,
        "clients": args.clients,
        "gunicorn": {"workers": args.workers, "threads": args.threads, "worker_class": "gthread"},
        "api_seconds": round(api_seconds, 3),
        "api_events_per_second": round(api_rate, 1),
        "raw_insert_method": "COPY FROM STDIN (psycopg, one connection, one transaction)",
        "raw_insert_seconds": round(copy_seconds, 3),
        "raw_insert_events_per_second": round(copy_rate, 1),
        "ratio": round(api_rate / copy_rate, 3),
        "raw_multirow_insert_events_per_second": round(insert_rate, 1),
        "ratio_vs_multirow_insert": round(api_rate / insert_rate, 3),
        # Load-independent efficiency: CPU one raw-COPY event costs / CPU one API event costs
        # (gunicorn + PostgreSQL backends + client). Meaningful where the machine is shared.
        "cpu_cost_ratio": round((copy_pg_cpu + copy_client_cpu) / max(
            (web1 - web0) + pg_cpu + (client1 - client0), 1e-9), 3),
        "stored_after_api": stored,
        "distinct_event_ids_after_api": distinct,
        "stored_exactly_n": exact,
        "responses": {"accepted": stats.accepted, "duplicates": stats.duplicates,
                      "rejected": stats.rejected, "retries": stats.retries,
                      "failed_batches": len(stats.failures), "failures": stats.failures[:5]},
        "latency_ms": {"p50": round(_percentile(stats.latencies, 0.50) * 1000, 1),
                       "p95": round(_percentile(stats.latencies, 0.95) * 1000, 1),
                       "max": round(max(stats.latencies, default=float("nan")) * 1000, 1)},
        "cpu_during_api_run": {
            "machine_cores_busy": round(machine_busy / interval, 2),
            "gunicorn_cores": round((web1 - web0) / interval, 2),
            "benchmark_client_cores": round((client1 - client0) / interval, 2),
            "postgres_backend_cores": round(pg_cpu / interval, 2),
            "everything_else_cores": round(
                (machine_busy - (web1 - web0) - (client1 - client0) - pg_cpu) / interval, 2),
            "machine_cores_total": round((total1 - total0) / interval, 2),
        },
        # CPU cost per 1,000 events, independent of what else the machine was running.
        "cpu_ms_per_1000_events": {
            "gunicorn": round((web1 - web0) * per_k * 1000, 1),
            "postgres_backends": round(pg_cpu * per_k * 1000, 1),
            "client": round((client1 - client0) * per_k * 1000, 1),
            "raw_copy_postgres_backend": round(copy_pg_cpu * per_k * 1000, 1),
            "raw_copy_client": round(copy_client_cpu * per_k * 1000, 1),
            "raw_multirow_insert_postgres_backend": round(insert_pg_cpu * per_k * 1000, 1),
        },
        "protocols": {
            "native": {"events_per_second": round(api_rate, 1), "ratio_to_native": 1.0,
                       "stored_exactly_n": exact, "body": "JSON"},
            **{name: {**figures, "body": "gzip JSON",
                      "target_ratio": TARGET_PROTOCOL_RATIO,
                      "met": figures["ratio_to_native"] >= TARGET_PROTOCOL_RATIO
                      and figures["stored_exactly_n"]}
               for name, figures in protocols.items()}},
        "targets": {"api_events_per_second": TARGET_EVENTS_PER_SECOND, "ratio": TARGET_RATIO,
                    "met": api_rate >= TARGET_EVENTS_PER_SECOND and api_rate / copy_rate
                    >= TARGET_RATIO},
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(), "cpus": cpus,
                    "python": platform.python_version(), "postgresql": pg_version},
    }


def drop_enqueued_tasks(broker_url: str) -> int:
    """The server enqueues sentiment scoring of the reviews it stored; nothing consumes the
    benchmark's broker database, so its queues are emptied afterwards (only the default one,
    never a broker passed with --broker-url)."""
    if broker_url != DEFAULT_BROKER_URL:
        return 0
    try:
        import redis

        client = redis.Redis.from_url(broker_url, socket_connect_timeout=2)
        dropped = sum(client.llen(q) for q in ("default", "training"))
        client.delete("default", "training")
        return dropped
    except Exception:  # Redis not running: the server could not enqueue either
        return 0


def format_table(r: dict[str, Any]) -> str:
    lines = [
        f"{r['events']:,} events, batches of {r['batch']}, {r['clients']} clients, gunicorn "
        f"{r['gunicorn']['workers']}x{r['gunicorn']['threads']} gthread",
        "",
        f"{'':34} {'events/s':>12}",
        f"{'API (HTTP -> gunicorn -> Django)':34} {r['api_events_per_second']:>12,.0f}",
        f"{'raw insert (COPY)':34} {r['raw_insert_events_per_second']:>12,.0f}",
        f"{'ratio API / raw':34} {r['ratio']:>12.1%}",
        f"{'raw multi-row INSERT (reference)':34} {r['raw_multirow_insert_events_per_second']:>12,.0f}",
        f"{'ratio API / multi-row INSERT':34} {r['ratio_vs_multirow_insert']:>12.1%}",
        f"{'CPU cost ratio raw COPY / API':34} {r['cpu_cost_ratio']:>12.1%}",
        "",
        f"stored after API run: {r['stored_after_api']:,} rows, "
        f"{r['distinct_event_ids_after_api']:,} distinct event_ids -> "
        f"{'exactly N, nothing lost or doubled' if r['stored_exactly_n'] else 'MISMATCH'}",
        f"responses: {r['responses']['accepted']:,} accepted, {r['responses']['duplicates']} "
        f"duplicates, {r['responses']['rejected']} rejected, {r['responses']['retries']} retries,"
        f" {r['responses']['failed_batches']} failed batches",
        f"batch latency: p50 {r['latency_ms']['p50']} ms, p95 {r['latency_ms']['p95']} ms, "
        f"max {r['latency_ms']['max']} ms",
        "CPU during API run (cores): machine {machine_cores_busy} of {machine_cores_total}, "
        "gunicorn {gunicorn_cores}, postgres backends {postgres_backend_cores}, client "
        "{benchmark_client_cores}, everything else {everything_else_cores}".format(
            **r["cpu_during_api_run"]),
        "CPU ms per 1,000 events: gunicorn {gunicorn}, postgres backends {postgres_backends}, "
        "client {client}; raw COPY: postgres {raw_copy_postgres_backend} + client "
        "{raw_copy_client}; raw multi-row INSERT: postgres "
        "{raw_multirow_insert_postgres_backend}".format(**r["cpu_ms_per_1000_events"]),
        f"targets (>= {TARGET_EVENTS_PER_SECOND:,}/s and >= {TARGET_RATIO:.0%} of raw): "
        f"{'met' if r['targets']['met'] else 'NOT met'}",
    ]
    if len(r["protocols"]) > 1:
        lines += ["", f"{'protocol (batch endpoint)':26} {'body':>10} {'events/s':>10} "
                      f"{'vs native':>10} {'stored N':>9}"]
        for name, p in r["protocols"].items():
            target = "" if name == "native" else (
                f"  target >= {p['target_ratio']:.0%}: {'met' if p['met'] else 'NOT met'}")
            lines.append(f"{name:26} {p['body']:>10} {p['events_per_second']:>10,.0f} "
                         f"{p['ratio_to_native']:>10.1%} {str(p['stored_exactly_n']):>9}{target}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per gunicorn worker")
    parser.add_argument("--users", type=int, default=50_000, help="distinct end users")
    parser.add_argument("--items", type=int, default=10_000, help="distinct catalog items")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL",
                                                                 DEFAULT_DATABASE_URL))
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL,
                        help="Celery broker the server enqueues to (sentiment of reviews)")
    parser.add_argument("--server-log", help="keep gunicorn's log at this path")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--protocol", action="append", choices=("posthog", "segment", "native"),
                        default=[], help="also time this SDK protocol's batch endpoint "
                                         "(repeatable; the native API always runs)")
    args = parser.parse_args(argv)
    args.protocol = [p for p in dict.fromkeys(args.protocol) if p != "native"]
    if args.batch > 1000:
        parser.error("--batch is at most 1000 (the API's limit)")

    results = run(args)
    drop_enqueued_tasks(args.broker_url)
    publish(format_table(results), results, args.json)
    sdk_exact = all(p["stored_exactly_n"] for p in results["protocols"].values())
    return 0 if results["stored_exactly_n"] and sdk_exact and \
        not results["responses"]["failed_batches"] else 1


if __name__ == "__main__":
    sys.exit(main())
