"""PostgreSQL connections terminated mid-batch, and the server unreachable for a while:
the events API answers 503 with Retry-After (never a 500, never a 200 for events that
were not committed), and a client that retries stores every event exactly once.

Requests go over HTTP to a live server thread, so Django's own per-request connection
handling (a broken connection is dropped at the end of the request) is what recovers."""

import threading
import time
import uuid

import psycopg
import pytest
import requests

from tests.services import require_postgresql

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/events"


def batch(size: int, tag: str) -> list[dict]:
    return [{"event_id": str(uuid.uuid4()), "type": "view", "user_id": f"{tag}-u{n % 7}",
             "item_id": f"{tag}-i{n % 11}"} for n in range(size)]


def admin_connection():
    """A connection of the test's own, outside Django, to terminate other backends from."""
    from django.db import connection

    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return psycopg.connect(**params, autocommit=True)


def assert_database_unavailable(response) -> None:
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    body = response.json()
    assert (body["type"], body["code"]) == ("server_error", "database_unavailable")


@pytest.fixture
def events_api(live_server, api_key):
    require_postgresql()
    session = requests.Session()
    session.headers["Authorization"] = f"Api-Key {api_key}"

    def post(events: list[dict]):
        return session.post(live_server.url + URL, json={"batch": events}, timeout=30)

    return post


def test_a_connection_terminated_mid_batch_stores_nothing_and_the_retry_stores_it_once(
        events_api, monkeypatch):
    from django.db import connection

    from ingestion import services
    from ingestion.models import Event

    insert_events = services._insert_new_events_pg

    def terminate_after_the_insert(*args, **kwargs):
        """The rows are written, the transaction not yet committed, when the connection
        is cut."""
        inserted = insert_events(*args, **kwargs)
        with admin_connection() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)",
                          [connection.connection.info.backend_pid])
        return inserted

    monkeypatch.setattr(services, "_insert_new_events_pg", terminate_after_the_insert)
    events = batch(30, "mid")

    first = events_api(events)

    assert_database_unavailable(first)
    assert not Event.objects.exists()  # the inserted rows went with the transaction
    monkeypatch.undo()

    retried = events_api(events)
    again = events_api(events)  # as if the client never saw the 200

    assert retried.status_code == 200, retried.text
    assert retried.json()["accepted"] == 30
    assert again.json()["duplicates"] == 30
    assert sorted(map(str, Event.objects.values_list("event_id", flat=True))) == sorted(
        e["event_id"] for e in events)


def test_a_client_retrying_through_an_outage_stores_every_event_exactly_once(events_api):
    from django.db import connection

    from ingestion.models import Event

    sent: list[str] = []
    statuses: list[int] = []
    done = threading.Event()

    def client() -> None:
        """Sends batches back to back; a 503 is retried, as every SDK does."""
        for number in range(40):
            events = batch(25, f"b{number}")
            while True:
                response = events_api(events)
                statuses.append(response.status_code)
                if response.status_code != 503:
                    break
                assert int(response.headers["Retry-After"]) > 0
                time.sleep(0.05)
            sent.extend(e["event_id"] for e in events)
        done.set()

    sender = threading.Thread(target=client, daemon=True)
    sender.start()
    while len(statuses) < 5:
        time.sleep(0.01)
    # The server goes away: its open connections are cut and new ones refused (nothing
    # listens on the port), then it is back.
    real_port = connection.settings_dict["PORT"]
    with admin_connection() as admin:
        connection.settings_dict["PORT"] = "1"
        try:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            outage_started = len(statuses)
            time.sleep(1.5)
        finally:
            connection.settings_dict["PORT"] = real_port
    assert done.wait(120), "the client did not finish"
    sender.join()

    during_outage = statuses[outage_started:]
    assert 503 in during_outage
    assert set(statuses) == {200, 503}, statuses
    connection.close()  # this thread's connection was cut with the rest
    stored = list(map(str, Event.objects.values_list("event_id", flat=True)))
    assert len(stored) == len(sent) == 40 * 25
    assert sorted(stored) == sorted(sent)


@pytest.mark.parametrize("cut_during", ["progress", "the pipeline's own query"])
def test_a_training_job_whose_connection_is_cut_ends_with_its_own_error(monkeypatch,
                                                                       cut_during):
    """A failover or a dropped idle connection in the middle of a long training: a lost
    progress line does not end it; an error of the pipeline's own is recorded as the
    job's end on a new connection, instead of the job staying "running" with no worker."""
    require_postgresql()
    from django.db import connection

    from recommender import services, training
    from recommender.models import TrainingJob

    def cut():
        with admin_connection() as admin:
            admin.execute("SELECT pg_terminate_backend(%s)",
                          [connection.connection.info.backend_pid])

    def pipeline(reporter):
        cut()
        if cut_during == "progress":
            reporter.on_epoch_end(1, {"loss": 1.0})  # not stored; the training goes on
            reporter.on_epoch_end(2, {"loss": 0.5})
            raise ValueError("the pipeline's own error")
        TrainingJob.objects.count()

    monkeypatch.setitem(training.PIPELINES, "recommender", pipeline)
    job = services.start_training_job(kind="recommender", started_by="test", enqueue=False)

    finished = services.run_training_job(job_id=job.pk)

    assert finished.status == TrainingJob.Status.FAILED
    if cut_during == "progress":
        assert finished.error.startswith("ValueError: the pipeline's own error")
        assert [entry["epoch"] for entry in finished.progress] == [1, 2]
    else:
        assert finished.error.startswith("django.db.utils.OperationalError: terminating")
