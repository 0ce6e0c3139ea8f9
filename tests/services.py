"""Real service processes for the tests that need them: a Celery worker (optionally with
beat inside it) on the test database, and a throwaway Redis server a test may stop.

The tests using them are skipped where the services are missing, unless
LODESTAR_REQUIRE_SERVICES=1 (CI), where that is a failure."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKER_START_TIMEOUT = 90


def require_services(reason: str) -> None:
    """Skips the test, or fails it where CI demands the real services."""
    if os.environ.get("LODESTAR_REQUIRE_SERVICES") == "1":
        pytest.fail(f"LODESTAR_REQUIRE_SERVICES=1 but this test {reason}")
    pytest.skip(reason)


def redis_reachable(url: str) -> bool:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=2) as broker:
            broker.ensure_connection(max_retries=0, timeout=2)
        return True
    except Exception:
        return False


def configured_redis_broker() -> str:
    from django.conf import settings

    url = settings.CELERY_BROKER_URL
    if url.startswith(("redis://", "rediss://")) and redis_reachable(url):
        return url
    require_services(f"needs a reachable Redis broker (CELERY_BROKER_URL is {url!r})")


def require_postgresql() -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        require_services(f"needs PostgreSQL (the database is {connection.vendor})")


def database_url(settings_dict: dict) -> str:
    """DATABASE_URL for the test database pytest-django created, for a child process."""
    if settings_dict["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    credentials = quote(settings_dict["USER"] or "", safe="")
    if settings_dict.get("PASSWORD"):
        credentials += ":" + quote(settings_dict["PASSWORD"], safe="")
    host = settings_dict["HOST"] or "127.0.0.1"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{settings_dict['NAME']}"


class Worker:
    """One `celery worker` process on both queues (solo pool) against the test database."""

    def __init__(self, process: subprocess.Popen, log: Path):
        self.process = process
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, the task in hand is never acknowledged."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        # Cold shutdown: a warm one would wait for a training task to finish.
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@contextlib.contextmanager
def celery_worker(*, broker_url: str, run_dir: Path, env: dict | None = None,
                  with_beat: bool = False, preexec_fn=None):
    """Starts a worker, waits until it is ready, and always stops it. The calling process
    sends tasks to it (instead of running them inline, as the test settings do)."""
    from django.db import connection

    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / f"worker-{uuid.uuid4().hex[:8]}.log"
    child_env = {**os.environ,
                 "DJANGO_SETTINGS_MODULE": "config.settings.local",
                 "DATABASE_URL": database_url(connection.settings_dict),
                 "CELERY_BROKER_URL": broker_url,
                 "CELERY_TASK_ALWAYS_EAGER": "false",
                 "MODEL_STORE": str(run_dir / "models"),
                 "PYTHONUNBUFFERED": "1",
                 **(env or {})}
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "default,training",
               "--pool", "solo", "--loglevel", "INFO", "--without-gossip", "--without-mingle",
               "-n", f"test-{uuid.uuid4().hex[:8]}@%h"]
    if with_beat:
        command.append("--beat")
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=child_env, stdout=log,
                                   stderr=subprocess.STDOUT, preexec_fn=preexec_fn)
    worker = Worker(process, log_path)
    try:
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        while " ready." not in worker.output():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"The worker did not start:\n{worker.output()[-4000:]}")
            time.sleep(0.2)
        with tasks_sent_to(broker_url):
            yield worker
    finally:
        worker.stop()


@contextlib.contextmanager
def tasks_sent_to(broker_url: str):
    """This process sends its tasks to `broker_url` (instead of running them inline, as the
    test settings do); the app's connection pools are dropped on the way in and out, as
    they would otherwise keep sending to the broker they were first opened on. Celery reads
    CELERY_BROKER_URL from the environment before its own configuration, so that moves too."""
    from config.celery import app

    def drop_connections() -> None:
        app.close()
        # app.close() leaves the producer pool when the app's own pool was never opened.
        app.amqp._producer_pool = None

    was_eager, was_broker = app.conf.task_always_eager, app.conf.broker_url
    was_environ = os.environ.get("CELERY_BROKER_URL")
    drop_connections()
    app.conf.task_always_eager, app.conf.broker_url = False, broker_url
    os.environ["CELERY_BROKER_URL"] = broker_url
    try:
        yield
    finally:
        drop_connections()
        app.conf.task_always_eager, app.conf.broker_url = was_eager, was_broker
        if was_environ is None:
            os.environ.pop("CELERY_BROKER_URL", None)
        else:
            os.environ["CELERY_BROKER_URL"] = was_environ


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A redis-server of the test's own on a free port, so stopping it breaks nothing else
    the suite uses."""

    def __init__(self, run_dir: Path):
        binary = shutil.which("redis-server")
        if binary is None:
            require_services("needs redis-server on PATH")
        self.binary = binary
        self.port = free_port()
        self.run_dir = run_dir
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", str(self.run_dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not redis_reachable(self.url):
            if time.monotonic() > deadline:
                pytest.fail("The test's redis-server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
