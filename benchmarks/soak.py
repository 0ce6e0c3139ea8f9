"""A soak under mixed load: gunicorn and a real Celery worker on PostgreSQL and Redis.

    python -m benchmarks.soak [--minutes 10] [--items 2000] [--users 5000]
                              [--database-url URL] [--broker-url URL] [--json OUT]

What it does, in one run:

1. (Re)creates its own PostgreSQL database (default ``lodestar_soak_bench``), migrates it,
   creates an API key and a product manager login, COPYs a shop (``--users`` x 20
   interactions) and registers a trained two-tower model as the active version.
2. Starts gunicorn (production settings) and two ``celery worker`` processes as
   docker-compose deploys them: one on ``default`` (sentiment scoring, sweeps) and one on
   ``training`` that replaces its pool child after each job, under ``nice``
   (``--worker-nice``) as a single box would run it, so that training yields the CPU.
3. Warms up (every endpoint, every gunicorn worker), records the resident memory of every
   process, then for ``--minutes`` runs paced clients at fixed rates: event batches (with
   event ids, a share of them reviews that the worker scores), recommendations, similar
   items, and the analytics API and dashboard pages as a product manager. At a fifth of
   the run a training job is started; when it succeeds its version is promoted (if the
   registry did not already activate it) and the web processes hot-swap to it.
4. Counts what was stored against what was sent (lost and duplicated events), the
   resident memory again, and per endpoint requests/s, p50/p99 and errors, with the
   recommendations' p99 while the job trained reported on its own.

Targets: zero errors, zero lost or duplicated events, recommendations p99 < 50 ms while
training runs, resident memory growth < 10% per process after warm-up.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from benchmarks.ingest import (
    ROOT,
    Server,
    _cpu_model,
    child_pids,
    manage,
    recreate_database,
    server_env,
)
from benchmarks.output import publish
from benchmarks.serving import generate_shop, seed_database, train_and_register

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/lodestar_soak_bench"
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/7"
TARGET_REC_P99_MS = 50.0
TARGET_MEMORY_GROWTH = 0.10
INGEST_BATCH = 50
REVIEW_TEXTS = ("Lovely soft fabric, fits perfectly", "Ripped after one wash, very poor",
                "It is fine, nothing special", "Great colour and a flattering cut")
ANALYTICS_PATHS = ("/api/v1/analytics/overview", "/api/v1/analytics/retention",
                   "/api/v1/analytics/items", "/api/v1/analytics/sentiment",
                   "/api/v1/analytics/recommendations", "/api/v1/analytics/funnel",
                   "/dashboards/overview/", "/dashboards/funnels/", "/dashboards/retention/",
                   "/dashboards/items/", "/dashboards/sentiment/",
                   "/dashboards/recommendations/")


# --------------------------------------------------------------------------- processes


def resident_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Worker:
    """`celery worker` (prefork, one child) on one queue; stopped on exit."""

    def __init__(self, env: dict[str, str], *, queue: str, nice: int, log: Path,
                 extra: Sequence[str] = ()):
        self.args = ["nice", "-n", str(nice), sys.executable, "-m", "celery", "-A", "config",
                     "worker", "-Q", queue, "--concurrency", "1", "--loglevel", "INFO",
                     "--without-gossip", "--without-mingle", "-n", f"soak-{queue}@%h", *extra]
        self.env = env
        self.log = log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Worker:
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while b" ready." not in self.log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start; see {self.log}:\n"
                                 + self.log.read_text(errors="replace")[-3000:])
            time.sleep(0.3)
        return self

    def pids(self) -> list[int]:
        return [self.proc.pid, *child_pids(self.proc.pid)] if self.proc else []

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def memory_of(server: Server, workers: dict[str, Worker]) -> dict[str, int | None]:
    """Resident KiB per process, named by role (gunicorn workers in pid order)."""
    report = {"gunicorn master": resident_kib(server.proc.pid)}
    for index, pid in enumerate(sorted(server.worker_pids())):
        report[f"gunicorn worker {index + 1}"] = resident_kib(pid)
    for queue, worker in workers.items():
        pids = worker.pids()
        report[f"celery {queue}"] = resident_kib(pids[0])
        for index, pid in enumerate(sorted(pids[1:])):
            report[f"celery {queue} child {index + 1}"] = resident_kib(pid)
    return report


# --------------------------------------------------------------------------- clients


class Recorder:
    """Latencies and errors per endpoint, each tagged with when it was asked."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.errors: dict[str, list[str]] = {}

    def record(self, endpoint: str, began: float, seconds: float, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.samples.setdefault(endpoint, []).append((began, seconds))
            else:
                self.errors.setdefault(endpoint, []).append(error)


class PacedClient(threading.Thread):
    """Sends one request every 1/rate seconds on a keep-alive connection (late requests
    are not bunched up: a slow answer pushes the schedule back)."""

    def __init__(self, *, port: int, rate: float, until: float, recorder: Recorder,
                 next_request: Callable[[], tuple[str, str, str, bytes | None, dict]]):
        super().__init__(daemon=True)
        self.port, self.rate, self.until = port, rate, until
        self.recorder, self.next_request = recorder, next_request

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        due = time.monotonic()
        while due < self.until:
            time.sleep(max(0.0, due - time.monotonic()))
            endpoint, method, path, body, headers = self.next_request()
            began = time.monotonic()
            error = None
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                if response.status != 200:
                    error = f"HTTP {response.status} {payload[:160]!r}"
            except (OSError, http.client.HTTPException) as failure:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                error = repr(failure)
            self.recorder.record(endpoint, began, time.monotonic() - began, error)
            due = max(due + 1 / self.rate, time.monotonic())
        conn.close()


class EventSender:
    """Builds event batches with ids and remembers every id it sent."""

    def __init__(self, api_key: str, users: int, items: int, seed: int = 9):
        self.rng = np.random.default_rng(seed)
        self.api_key, self.users, self.items = api_key, users, items
        self.sent: list[str] = []
        self.lock = threading.Lock()

    def next_request(self) -> tuple[str, str, str, bytes, dict]:
        with self.lock:
            events = []
            for _ in range(INGEST_BATCH):
                event_id = str(uuid.uuid4())
                user = f"user-{int(self.rng.integers(self.users)):06d}"
                item = f"sku-{int(self.rng.integers(self.items)):06d}"
                if self.rng.random() < 0.1:
                    events.append({"event_id": event_id, "type": "review", "user_id": user,
                                   "item_id": item, "value": int(self.rng.integers(1, 6)),
                                   "text": REVIEW_TEXTS[int(self.rng.integers(4))]})
                else:
                    kind = ("view", "click", "add_to_cart", "purchase")[
                        int(self.rng.choice(4, p=[0.7, 0.2, 0.06, 0.04]))]
                    events.append({"event_id": event_id, "type": kind, "user_id": user,
                                   "item_id": item})
                self.sent.append(event_id)
        body = json.dumps({"batch": events}).encode()
        return ("events", "POST", "/api/v1/events", body,
                {"Authorization": f"Api-Key {self.api_key}",
                 "Content-Type": "application/json"})


# --------------------------------------------------------------------------- run


def summarise(recorder: Recorder, seconds: float,
              training: tuple[float, float] | None) -> dict[str, dict]:
    report = {}
    for endpoint in sorted(set(recorder.samples) | set(recorder.errors)):
        samples = recorder.samples.get(endpoint, [])
        latencies = np.asarray([s for _, s in samples]) * 1000
        entry = {
            "requests": len(samples) + len(recorder.errors.get(endpoint, [])),
            "errors": len(recorder.errors.get(endpoint, [])),
            "requests_per_second": round(len(samples) / seconds, 2),
            "p50_ms": round(float(np.percentile(latencies, 50)), 1) if len(samples) else None,
            "p99_ms": round(float(np.percentile(latencies, 99)), 1) if len(samples) else None,
            "error_examples": recorder.errors.get(endpoint, [])[:3],
        }
        if training is not None:
            during = np.asarray([s for began, s in samples
                                 if training[0] <= began <= training[1]]) * 1000
            entry["p99_ms_while_training"] = (round(float(np.percentile(during, 99)), 1)
                                              if len(during) else None)
            entry["requests_while_training"] = int(len(during))
        report[endpoint] = entry
    return report


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = print
    database_name = urlsplit(args.database_url).path.lstrip("/")
    log(f"Recreating {database_name} and migrating ...", flush=True)
    recreate_database(args.database_url)
    with tempfile.TemporaryDirectory(prefix="lodestar-soak-") as tmp:
        var_dir = Path(tmp)
        env = server_env(args.database_url, args.broker_url, var_dir)
        env.update({"OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "OMP_NUM_THREADS": "1", "MODEL_REFRESH_SECONDS": "5"})
        manage(env, "migrate", "--noinput")
        api_key = manage(env, "create_api_key", "soak").strip().splitlines()[-1]
        shop = generate_shop(args.items, args.users)
        seed_database(args.database_url, shop)
        os.environ.update({k: env[k] for k in ("DJANGO_SETTINGS_MODULE", "SECRET_KEY",
                                               "DATABASE_URL", "MODEL_STORE",
                                               "LODESTAR_VAR_DIR", "CELERY_BROKER_URL",
                                               "DJANGO_ALLOWED_HOSTS", "SECURE_SSL_REDIRECT")})
        import django

        django.setup()
        from django.contrib.sessions.backends.db import SessionStore
        from django.db import connections

        from accounts.services import create_login
        from ingestion.models import Event
        from recommender.models import ModelVersion, TrainingJob
        from recommender.sentiment_scoring import count_missing_scores
        from recommender.services import promote_version, start_training_job

        log("Training the first active version ...", flush=True)
        train_and_register(shop, sample_users=min(args.users, 3000), epochs=2,
                           name="recommender-soak-initial")
        manager = create_login(username="soak-pm", password=uuid.uuid4().hex,
                               role="product_manager")
        session = SessionStore()
        session["_auth_user_id"] = str(manager.pk)
        session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
        session["_auth_user_hash"] = manager.get_session_auth_hash()
        session.create()
        seeded_events = Event.objects.count()
        connections.close_all()

        rng = np.random.default_rng(5)
        client_headers = {"Authorization": f"Api-Key {api_key}"}
        pm_headers = {"Cookie": f"sessionid={session.session_key}"}

        def recommendation():
            user = int(rng.integers(args.users))
            return ("recommendations", "GET",
                    f"/api/v1/recommendations?user_id=user-{user:06d}&k=10", None,
                    client_headers)

        def similar():
            item = int(rng.integers(args.items))
            return ("similar items", "GET", f"/api/v1/items/sku-{item:06d}/similar?k=10",
                    None, client_headers)

        def analytics():
            path = ANALYTICS_PATHS[int(rng.integers(len(ANALYTICS_PATHS)))]
            return ("dashboards" if path.startswith("/dashboards") else "analytics API",
                    "GET", path, None, pm_headers)

        sender = EventSender(api_key, args.users, args.items)
        # As docker-compose deploys them: scoring on `default`, training on its own worker
        # whose pool child is replaced after each job (TensorFlow keeps what it allocated).
        with Server(env, workers=args.workers, threads=args.threads,
                    log=var_dir / "gunicorn.log") as server, \
                Worker(env, queue="default", nice=0, log=var_dir / "default.log") as default, \
                Worker(env, queue="training", nice=args.worker_nice,
                       log=var_dir / "training.log", extra=["--max-tasks-per-child", "1"]
                       ) as training:
            workers = {"default": default, "training": training}
            log(f"Warming up for {args.warmup} s ...", flush=True)
            warm = Recorder()
            until = time.monotonic() + args.warmup
            clients = [PacedClient(port=server.port, rate=rate, until=until, recorder=warm,
                                   next_request=make)
                       for make, rate in ((recommendation, 10), (similar, 5), (analytics, 2),
                                          (sender.next_request, 2))]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            if warm.errors:
                raise SystemExit(f"warm-up errors: {json.dumps(warm.errors)[:2000]}")
            memory_start = memory_of(server, workers)

            log(f"Soaking for {args.minutes} min ...", flush=True)
            recorder = Recorder()
            began = time.monotonic()
            until = began + args.minutes * 60
            rates = ((recommendation, args.rec_rate / 2), (recommendation, args.rec_rate / 2),
                     (similar, args.similar_rate), (analytics, args.analytics_rate),
                     (sender.next_request, args.ingest_rate))
            clients = [PacedClient(port=server.port, rate=rate, until=until, recorder=recorder,
                                   next_request=make) for make, rate in rates]
            for client in clients:
                client.start()
            time.sleep(args.minutes * 60 / 5)
            job = start_training_job(kind="recommender", started_by="soak")
            training_started = time.monotonic()
            log(f"  training job #{job.pk} started", flush=True)
            while (job := TrainingJob.objects.get(pk=job.pk)).status in ("queued", "running"):
                if time.monotonic() > until:
                    break
                time.sleep(1)
            training_ended = time.monotonic()
            promoted = None
            if job.status == "succeeded":
                version = ModelVersion.objects.get(pk=job.model_version_id)
                if version.status != ModelVersion.Status.ACTIVE:
                    version = promote_version(version_id=version.pk, actor="soak")
                promoted = version.name
            log(f"  job {job.status} after {training_ended - training_started:.0f} s; "
                f"active: {promoted}", flush=True)
            connections.close_all()
            for client in clients:
                client.join()
            seconds = time.monotonic() - began
            memory_end = memory_of(server, workers)
            # A promoted version is loaded in the background (MODEL_LOAD_IN_BACKGROUND):
            # the worker answering may still be loading it for a few seconds.
            serving_deadline = time.monotonic() + 60
            while True:
                example = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                example.request("GET", "/api/v1/recommendations?user_id=user-000001&k=3",
                                headers=client_headers)
                serving_version = json.loads(example.getresponse().read()).get("model_version")
                example.close()
                if promoted in (None, serving_version) or time.monotonic() > serving_deadline:
                    break
                time.sleep(1)

        stored = Event.objects.count()
        sent = set(sender.sent)
        stored_ids = set(map(str, Event.objects.exclude(event_id=None).values_list(
            "event_id", flat=True)))
        unscored = count_missing_scores()
        connections.close_all()

    endpoints = summarise(recorder, seconds, (training_started, training_ended))
    growth = {name: round(memory_end[name] / kib - 1, 3)
              for name, kib in memory_start.items()
              if kib and memory_end.get(name)}
    rec_p99 = endpoints["recommendations"].get("p99_ms_while_training")
    errors = sum(e["errors"] for e in endpoints.values())
    lost = len(sent - stored_ids)
    # event_id is unique, so a retry cannot store an event twice under its id: a duplicate
    # would be a row beyond the seeded shop and the ids sent.
    duplicated = stored - seeded_events - len(sent & stored_ids)
    return {
        "minutes": args.minutes,
        "shop": {"items": args.items, "users": args.users, "seeded_events": seeded_events},
        "gunicorn": {"workers": args.workers, "threads": args.threads},
        "workers": {"default": {"concurrency": 1},
                    "training": {"concurrency": 1, "nice": args.worker_nice,
                                 "max_tasks_per_child": 1}},
        "rates_per_second": {"recommendations": args.rec_rate, "similar": args.similar_rate,
                             "analytics": args.analytics_rate,
                             "event_batches": args.ingest_rate, "batch_size": INGEST_BATCH},
        "training": {"job_status": job.status,
                     "seconds": round(training_ended - training_started, 1),
                     "promoted": promoted, "serving_at_end": serving_version},
        "endpoints": endpoints,
        "events": {"sent": len(sent), "stored_from_soak": len(sent & stored_ids),
                   "lost": lost, "duplicated": duplicated,
                   "reviews_unscored_at_end": unscored},
        "memory_kib": {"after_warmup": memory_start, "end": memory_end, "growth": growth},
        "targets": {"rec_p99_ms_while_training": TARGET_REC_P99_MS,
                    "memory_growth": TARGET_MEMORY_GROWTH,
                    "met": bool(errors == 0 and lost == 0 and duplicated == 0
                                and rec_p99 is not None and rec_p99 < TARGET_REC_P99_MS
                                and all(g < TARGET_MEMORY_GROWTH for g in growth.values()))},
        "machine": {"platform": platform.platform(), "cpu": _cpu_model(),
                    "cpus": os.cpu_count(), "python": platform.python_version()},
    }


def format_table(r: dict[str, Any]) -> str:
    lines = [f"Soak: {r['minutes']} min on {r['machine']['cpus']} CPUs ({r['machine']['cpu']}), "
             f"gunicorn {r['gunicorn']['workers']}x{r['gunicorn']['threads']}, training worker nice "
             f"{r['workers']['training']['nice']}; training job {r['training']['job_status']} in "
             f"{r['training']['seconds']} s, serving {r['training']['serving_at_end']} at end",
             "",
             f"{'endpoint':<16}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99 training':>14}"
             f"{'errors':>8}"]
    for name, e in r["endpoints"].items():
        lines.append(f"{name:<16}{e['requests_per_second']:>8}{e['p50_ms']!s:>9}"
                     f"{e['p99_ms']!s:>9}{e.get('p99_ms_while_training')!s:>14}{e['errors']:>8}")
    ev = r["events"]
    lines += ["", f"events sent {ev['sent']:,}, stored {ev['stored_from_soak']:,}, lost "
                  f"{ev['lost']}, duplicated {ev['duplicated']}, reviews unscored at end "
                  f"{ev['reviews_unscored_at_end']}", "",
              f"{'process':<22}{'RSS after warm-up':>18}{'RSS at end':>12}{'growth':>9}"]
    memory = r["memory_kib"]
    for name, start in memory["after_warmup"].items():
        end = memory["end"].get(name)
        growth = memory["growth"].get(name)
        lines.append(f"{name:<22}{(start or 0) / 1024:>15.0f} MB{(end or 0) / 1024:>9.0f} MB"
                     f"{'' if growth is None else f'{growth:+.1%}':>9}")
    lines += ["", f"targets (zero errors/lost/duplicated, recommendations p99 < "
                  f"{r['targets']['rec_p99_ms_while_training']:.0f} ms while training, memory "
                  f"growth < {r['targets']['memory_growth']:.0%}): "
                  f"{'met' if r['targets']['met'] else 'NOT met'}"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=60, help="seconds")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--worker-nice", type=int, default=10)
    parser.add_argument("--rec-rate", type=float, default=40, help="requests/s")
    parser.add_argument("--similar-rate", type=float, default=10, help="requests/s")
    parser.add_argument("--analytics-rate", type=float, default=1, help="requests/s")
    parser.add_argument("--ingest-rate", type=float, default=4,
                        help=f"batches of {INGEST_BATCH} events per second")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--broker-url", default=DEFAULT_BROKER_URL)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args)
    publish(format_table(results), results, args.json)
    return 0 if results["targets"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
