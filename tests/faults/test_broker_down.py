"""Redis stopped while clients send events: every event is answered 200 and stored, and the
sentiment scoring that could not be queued (or was queued in the Redis that lost its
memory) is done by the periodic sweep once Redis is back, with nobody running a command."""

import time
import uuid

import pytest

from tests.services import RedisServer, celery_worker, tasks_sent_to

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

BATCHES, REVIEWS_PER_BATCH = 6, 20
SWEEP_TIMEOUT = 120


def review_batch(batch: int) -> list[dict]:
    return [{"event_id": str(uuid.uuid4()), "type": "review", "user_id": f"u{batch}-{n}",
             "item_id": f"i{n % 5}", "value": 1 + n % 5,
             "text": "Lovely soft fabric, fits well" if n % 2 else "Ripped after one wash"}
            for n in range(REVIEWS_PER_BATCH)]


def send(client_app, batch: list[dict]) -> float:
    started = time.monotonic()
    response = client_app.post("/api/v1/events", {"batch": batch}, format="json")
    elapsed = time.monotonic() - started
    assert response.status_code == 200, response.content
    assert response.json()["accepted"] == len(batch)
    return elapsed


def test_events_are_stored_while_redis_is_down_and_scored_once_it_is_back(
        client_app, tmp_path):
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    from ingestion.models import Event
    from recommender.schedules import ensure_default_schedules

    redis = RedisServer(tmp_path)
    redis.start()
    sent: list[str] = []
    with tasks_sent_to(redis.url):
        # Queued, but no worker is running yet: these tasks die with Redis's memory.
        before = review_batch(0)
        send(client_app, before)
        sent += [event["event_id"] for event in before]
        redis.stop()

        seconds = []
        for batch_number in range(1, BATCHES):
            batch = review_batch(batch_number)
            seconds.append(send(client_app, batch))
            sent += [event["event_id"] for event in batch]

    stored = list(Event.objects.values_list("event_id", flat=True))
    assert sorted(map(str, stored)) == sorted(sent)
    assert not Event.objects.exclude(sentiment_model="").exists()
    # Enqueueing does not retry a dead broker, so the outage does not slow clients down.
    assert max(seconds) < 2.0, seconds

    ensure_default_schedules()
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.filter(task="recommender.tasks.score_missed_sentiment").update(
        interval=every_second)
    redis.start()
    try:
        # No grace period: these reviews' tasks went down with Redis or were never queued,
        # and the test need not wait the default minute.
        with celery_worker(broker_url=redis.url, run_dir=tmp_path / "worker",
                           env={"SENTIMENT_SWEEP_GRACE_SECONDS": "0"},
                           with_beat=True) as worker:
            deadline = time.monotonic() + SWEEP_TIMEOUT
            while Event.objects.filter(sentiment_model="").exists():
                if time.monotonic() > deadline:
                    pytest.fail(f"{Event.objects.filter(sentiment_model='').count()} reviews "
                                f"unscored after {SWEEP_TIMEOUT} s:\n{worker.output()[-4000:]}")
                time.sleep(0.2)
            output = worker.output()
    finally:
        redis.stop()

    assert "score_missed_sentiment" in output
    assert Event.objects.count() == len(sent)
    assert set(Event.objects.values_list("sentiment_model", flat=True)) == {"vader"}
