"""Training jobs and the model registry, without training anything: pipelines are
replaced by small functions, artifacts by a file whose checksum is recorded."""

import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from recommender import services
from recommender.artifacts import artifact_directory, directory_checksum
from recommender.ml.cancellation import TrainingCancelled
from recommender.models import Impression, ModelAuditEntry, ModelVersion, TrainingJob

pytestmark = pytest.mark.django_db

Status = TrainingJob.Status
Version = ModelVersion.Status


def make_version(*, kind: str = "recommender", name: str, status: str = Version.CANDIDATE,
                 activated_minutes_ago: int | None = None, metrics: dict | None = None,
                 baseline_metrics: dict | None = None, corrupt: bool = False) -> ModelVersion:
    """A version whose artifact exists under MODEL_STORE (use the model_store fixture)."""
    directory = artifact_directory(kind=kind, name=name)
    directory.mkdir(parents=True)
    (directory / "weights.bin").write_bytes(name.encode())
    checksum = "0" * 64 if corrupt else directory_checksum(directory)
    activated_at = (timezone.now() - timedelta(minutes=activated_minutes_ago)
                    if activated_minutes_ago is not None else None)
    return ModelVersion.objects.create(
        kind=kind, name=name, status=status, artifact_path=str(directory), checksum=checksum,
        metrics=metrics or {}, baseline_metrics=baseline_metrics or {},
        activated_at=activated_at)


def replace_pipeline(monkeypatch, kind: str, pipeline) -> None:
    from recommender import training

    monkeypatch.setitem(training.PIPELINES, kind, pipeline)


def queued_job(kind: str = "recommender") -> TrainingJob:
    return services.start_training_job(kind=kind, started_by="test", enqueue=False)


class TestOneActiveJobPerKind:
    @pytest.mark.parametrize("status", [Status.QUEUED, Status.RUNNING])
    def test_a_second_job_of_the_kind_is_refused_while_one_is_active(self, status):
        first = queued_job()
        TrainingJob.objects.filter(pk=first.pk).update(status=status)

        with pytest.raises(services.JobAlreadyActive) as refused:
            queued_job()

        assert refused.value.job.pk == first.pk
        assert TrainingJob.objects.count() == 1

    def test_other_kinds_and_finished_jobs_do_not_block(self):
        first = queued_job("recommender")
        queued_job("sentiment")
        TrainingJob.objects.filter(pk=first.pk).update(status=Status.FAILED)

        assert queued_job("recommender").status == Status.QUEUED

    def test_unknown_kind_is_refused(self):
        with pytest.raises(ValueError):
            services.start_training_job(kind="horoscope", started_by="test")


class TestCancel:
    def test_a_queued_job_is_cancelled_at_once(self):
        job = services.request_cancel(job_id=queued_job().pk, actor="admin:boss")

        assert job.status == Status.CANCELLED
        assert job.finished_at is not None
        assert "admin:boss" in job.log
        assert services.run_training_job(job_id=job.pk) is None

    def test_a_running_job_stops_at_its_next_batch(self, monkeypatch):
        batches_after_cancel = []

        def pipeline(reporter):
            services.request_cancel(job_id=reporter.job.pk, actor="admin:boss")
            for batch in range(1000):
                if reporter.should_stop():
                    raise TrainingCancelled()
                batches_after_cancel.append(batch)
            raise AssertionError("never stopped")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.CANCELLED
        assert job.cancel_requested
        assert batches_after_cancel == []
        assert "Cancel requested by admin:boss" in job.log

    def test_a_stop_ends_as_cancelled_whatever_the_training_loop_raises(self, monkeypatch):
        class LibraryOwnCancellation(Exception):
            pass

        def pipeline(reporter):
            services.request_cancel(job_id=reporter.job.pk, actor="admin:boss")
            while not reporter.should_stop():
                pass
            raise LibraryOwnCancellation("training cancelled")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.CANCELLED
        assert job.error == ""

    def test_a_finished_job_is_left_as_it_is(self):
        job = queued_job()
        TrainingJob.objects.filter(pk=job.pk).update(status=Status.SUCCEEDED)

        assert services.request_cancel(job_id=job.pk, actor="admin:boss").status == \
            Status.SUCCEEDED


class TestRunTrainingJob:
    def test_success_records_progress_and_the_version(self, monkeypatch, model_store):
        def pipeline(reporter):
            reporter.record(data_counts={"users": 3})
            reporter.on_epoch_end(1, {"loss": 2.5, "val_recall@50": 0.1})
            reporter.on_epoch_end(2, {"loss": 1.5, "val_recall@50": 0.3})
            return make_version(name="recommender-new")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.SUCCEEDED
        assert job.model_version.name == "recommender-new"
        assert [entry["epoch"] for entry in job.progress] == [1, 2]
        assert job.progress[1]["loss"] == 1.5
        assert job.data_counts == {"users": 3}
        assert job.attempts == 1 and job.finished_at and job.duration_seconds >= 0

    def test_failure_marks_the_job_failed_and_the_active_version_keeps_serving(
            self, monkeypatch, model_store):
        active = make_version(name="recommender-old", status=Version.ACTIVE,
                              activated_minutes_ago=60)

        def pipeline(reporter):
            raise RuntimeError("GPU on fire")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.FAILED
        assert job.error.startswith("RuntimeError: GPU on fire")
        assert "Failed: GPU on fire" in job.log
        active.refresh_from_db()
        assert active.status == Version.ACTIVE

    def test_not_enough_data_fails_with_the_reason(self, monkeypatch):
        def pipeline(reporter):
            raise services.NotEnoughData("2 users have two or more interactions")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.FAILED
        assert job.error == "2 users have two or more interactions"


def stale_running_job(*, attempts: int, kind: str = "recommender") -> TrainingJob:
    job = queued_job(kind)
    long_ago = timezone.now() - timedelta(hours=1)
    TrainingJob.objects.filter(pk=job.pk).update(
        status=Status.RUNNING, attempts=attempts, started_at=long_ago, heartbeat_at=long_ago,
        celery_task_id="dead-task")
    return job


class TestCrashRecovery:
    @pytest.mark.django_db(transaction=True)  # the heartbeat thread has its own connection
    def test_a_long_phase_without_batches_keeps_the_job_alive(self, monkeypatch, settings):
        settings.TRAINING_HEARTBEAT_TIMEOUT = 0.8  # a heartbeat every 0.2 s
        job = queued_job()
        seen = {}

        def pipeline(reporter):
            started = TrainingJob.objects.get(pk=reporter.job.pk).heartbeat_at
            time.sleep(1.2)  # evaluating: no batches, no progress, no log lines
            seen["heartbeat"] = TrainingJob.objects.get(pk=reporter.job.pk).heartbeat_at
            seen["started"] = started
            seen["recovered"] = services.recover_stale_jobs()
            raise services.NotEnoughData("stop here")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        services.run_training_job(job_id=job.pk)

        assert seen["heartbeat"] > seen["started"] + timedelta(seconds=0.5)
        assert seen["recovered"] == []
        job.refresh_from_db()
        assert (job.status, job.attempts) == (Status.FAILED, 1)

    def test_a_job_whose_worker_died_is_requeued_once_then_failed(
            self, monkeypatch, django_capture_on_commit_callbacks):
        enqueued = []
        monkeypatch.setattr(services, "_enqueue", lambda job: enqueued.append(job.pk))
        job = stale_running_job(attempts=1)

        with django_capture_on_commit_callbacks(execute=True):
            assert services.recover_stale_jobs() == [job.pk]
        job.refresh_from_db()
        assert job.status == Status.QUEUED
        assert enqueued == [job.pk]
        assert "re-queued" in job.log

        # The re-queued task starts (second attempt), and its worker dies as well.
        def pipeline(reporter):
            long_ago = timezone.now() - timedelta(hours=1)
            TrainingJob.objects.filter(pk=reporter.job.pk).update(heartbeat_at=long_ago)
            raise SystemExit("worker killed")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        with pytest.raises(SystemExit):
            services.run_training_job(job_id=job.pk)

        assert services.recover_stale_jobs() == [job.pk]
        job.refresh_from_db()
        assert job.status == Status.FAILED
        assert job.attempts == 2
        assert "stopped responding" in job.error
        assert enqueued == [job.pk]

    def test_a_job_with_a_fresh_heartbeat_is_left_running(self):
        job = stale_running_job(attempts=1)
        TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())

        assert services.recover_stale_jobs() == []
        job.refresh_from_db()
        assert job.status == Status.RUNNING

    def test_a_redelivered_task_of_a_job_out_of_attempts_fails_it(self):
        job = stale_running_job(attempts=2)

        assert services.run_training_job(job_id=job.pk) is None
        job.refresh_from_db()
        assert job.status == Status.FAILED

    def test_a_queued_job_that_never_reached_the_broker_is_enqueued(self, monkeypatch):
        enqueued = []
        monkeypatch.setattr(services, "_enqueue", lambda job: enqueued.append(job.pk))
        job = queued_job()
        TrainingJob.objects.filter(pk=job.pk).update(
            created_at=timezone.now() - timedelta(hours=1))
        fresh = queued_job("sentiment")

        assert services.recover_stale_jobs() == [job.pk]
        assert enqueued == [job.pk]
        assert fresh.pk not in enqueued

    def test_a_queued_job_whose_task_was_lost_is_sent_again(self, monkeypatch, settings):
        # A worker took the task while the database was down, ran out of retries and
        # acknowledged it: the job stays queued with its task id set.
        settings.CELERY_TRAINING_TIME_LIMIT, settings.TRAINING_HEARTBEAT_TIMEOUT = 3600, 600
        sent = []
        monkeypatch.setattr(services, "_send", lambda job: sent.append(job.pk) or "task-2")
        lost = queued_job()
        waiting = queued_job("sentiment")
        now = timezone.now()
        TrainingJob.objects.filter(pk=lost.pk).update(
            celery_task_id="task-1", enqueued_at=now - timedelta(seconds=4300))
        # Behind one job of the other kind it may wait out a whole training time limit.
        TrainingJob.objects.filter(pk=waiting.pk).update(
            celery_task_id="task-3", enqueued_at=now - timedelta(seconds=4100))

        assert services.recover_stale_jobs() == [lost.pk]
        assert sent == [lost.pk]
        lost.refresh_from_db()
        assert (lost.status, lost.celery_task_id) == (Status.QUEUED, "task-2")
        assert lost.enqueued_at >= now
        assert "had not started within 70 minutes of being sent; sent again" in lost.log
        assert services.recover_stale_jobs() == []  # sent again just now


def register(name: str, *, promote_if: bool, kind: str = "recommender") -> ModelVersion:
    return services.register_version(
        kind=kind, name=name, artifact_path=f"/models/{name}", checksum="c" * 64,
        metrics={"ndcg@10": 0.3}, baseline_metrics={"popularity": {"ndcg@10": 0.1}},
        params={}, data_counts={}, data_window=None, promote_if=promote_if,
        reason="ndcg@10 0.3000 vs baseline 0.1000",
        compared_with=ModelVersion.objects.filter(kind=kind, status=Version.ACTIVE).first())


class TestRegistry:
    def test_a_version_that_wins_is_promoted_and_the_old_one_retired(self):
        old = register("old", promote_if=True)
        new = register("new", promote_if=True)

        old.refresh_from_db()
        assert (old.status, new.status) == (Version.RETIRED, Version.ACTIVE)
        assert new.audit.get().action == "auto-promote"

    def test_a_version_that_loses_stays_a_candidate(self):
        active = register("active", promote_if=True)
        loser = register("loser", promote_if=False)

        active.refresh_from_db()
        assert (active.status, loser.status) == (Version.ACTIVE, Version.CANDIDATE)
        assert loser.audit.get().action == "kept-candidate"
        assert "vs baseline" in loser.audit.get().note

    def test_a_winner_compared_with_a_version_no_longer_active_stays_a_candidate(self):
        compared = register("compared", promote_if=True)
        chosen = register("chosen", promote_if=False)
        # While a job evaluates its model against `compared`, an admin activates `chosen`.
        ModelVersion.objects.filter(pk=compared.pk).update(status=Version.RETIRED)
        ModelVersion.objects.filter(pk=chosen.pk).update(status=Version.ACTIVE)

        late = services.register_version(
            kind="recommender", name="late", artifact_path="/models/late", checksum="c" * 64,
            metrics={"ndcg@10": 0.4}, baseline_metrics={}, params={}, data_counts={},
            data_window=None, promote_if=True, reason="ndcg@10 0.4000 vs active compared",
            compared_with=compared)

        chosen.refresh_from_db()
        assert (chosen.status, late.status) == (Version.ACTIVE, Version.CANDIDATE)
        entry = late.audit.get()
        assert entry.action == "kept-candidate"
        assert "the active version became chosen while this one was evaluated" in entry.note

    def test_promote_activates_and_audits_who_did_it(self, model_store):
        old = make_version(name="old", status=Version.ACTIVE, activated_minutes_ago=60)
        candidate = make_version(name="candidate")

        services.promote_version(version_id=candidate.pk, actor="admin:boss")

        old.refresh_from_db()
        candidate.refresh_from_db()
        assert (old.status, candidate.status) == (Version.RETIRED, Version.ACTIVE)
        entry = ModelAuditEntry.objects.get(version=candidate)
        assert (entry.action, entry.actor) == ("promote", "admin:boss")
        assert entry.created_at is not None

    def test_promote_refuses_an_artifact_that_fails_its_checksum(self, model_store):
        active = make_version(name="good", status=Version.ACTIVE, activated_minutes_ago=60)
        broken = make_version(name="broken", corrupt=True)

        with pytest.raises(services.RegistryActionRefused, match="checksum"):
            services.promote_version(version_id=broken.pk, actor="admin:boss")

        active.refresh_from_db()
        assert active.status == Version.ACTIVE

    def test_roll_back_reactivates_the_previous_version_and_audits(self, model_store):
        first = make_version(name="first", status=Version.RETIRED, activated_minutes_ago=120)
        make_version(name="never-active")
        current = make_version(name="current", status=Version.ACTIVE, activated_minutes_ago=5)

        restored = services.roll_back(kind="recommender", actor="admin:boss")

        current.refresh_from_db()
        assert restored.pk == first.pk
        assert (restored.status, current.status) == (Version.ACTIVE, Version.RETIRED)
        entry = restored.audit.get()
        assert (entry.action, entry.actor, entry.note) == (
            "rollback", "admin:boss", "rolled back from current")

    def test_roll_back_without_an_earlier_version_is_refused(self, model_store):
        make_version(name="only", status=Version.ACTIVE, activated_minutes_ago=5)

        with pytest.raises(services.RegistryActionRefused, match="No earlier"):
            services.roll_back(kind="recommender", actor="admin:boss")

    def test_one_traffic_split_per_kind(self, model_store):
        make_version(name="active", status=Version.ACTIVE, activated_minutes_ago=5)
        first = make_version(name="first")
        second = make_version(name="second")

        services.set_traffic_split(version_id=first.pk, percent=20, actor="admin:boss")
        services.set_traffic_split(version_id=second.pk, percent=10, actor="admin:boss")

        first.refresh_from_db()
        second.refresh_from_db()
        assert (first.traffic_percent, second.traffic_percent) == (0, 10)
        assert second.audit.get().note == "10% of users"

    @pytest.mark.parametrize("percent", [-1, 101])
    def test_split_outside_0_to_100_is_refused(self, model_store, percent):
        candidate = make_version(name="candidate")

        with pytest.raises(services.RegistryActionRefused):
            services.set_traffic_split(version_id=candidate.pk, percent=percent, actor="a")

    def test_a_sentiment_version_cannot_be_split(self, model_store):
        make_version(kind="sentiment", name="s-active", status=Version.ACTIVE,
                     activated_minutes_ago=5)
        candidate = make_version(kind="sentiment", name="s-candidate")

        with pytest.raises(services.RegistryActionRefused, match="recommender versions"):
            services.set_traffic_split(version_id=candidate.pk, percent=30, actor="admin:boss")
        candidate.refresh_from_db()
        assert candidate.traffic_percent == 0

    def test_the_active_version_cannot_be_split(self, model_store):
        active = make_version(name="active", status=Version.ACTIVE, activated_minutes_ago=5)

        with pytest.raises(services.RegistryActionRefused):
            services.set_traffic_split(version_id=active.pk, percent=50, actor="admin:boss")


class TestAbSplitServing:
    """serving_version with the model loading replaced: which version a user gets."""

    @pytest.fixture
    def registry(self, monkeypatch, model_store, settings):
        from recommender import serving

        monkeypatch.setattr(serving, "load_verified_model",
                            lambda *, kind, name, checksum: name)
        serving.registry.reset()
        yield serving
        serving.registry.reset()

    def test_a_user_always_gets_the_same_version_and_the_share_matches(self, registry):
        make_version(name="active", status=Version.ACTIVE, activated_minutes_ago=5)
        candidate = make_version(name="candidate")
        services.set_traffic_split(version_id=candidate.pk, percent=30, actor="admin:boss")
        registry.registry.refresh()

        users = [f"user-{n}" for n in range(10_000)]
        first = {user: registry.serving_version(kind="recommender", user_id=user).name
                 for user in users}
        again = {user: registry.serving_version(kind="recommender", user_id=user).name
                 for user in users}

        assert first == again
        share = sum(name == "candidate" for name in first.values()) / len(users)
        assert share == pytest.approx(0.30, abs=0.02)

    def test_buckets_are_stable_and_separate_per_kind(self, registry):
        buckets = [registry.ab_bucket(kind="recommender", user_id=f"u{n}") for n in range(1000)]

        assert buckets == [registry.ab_bucket(kind="recommender", user_id=f"u{n}")
                           for n in range(1000)]
        assert all(0 <= bucket < 100 for bucket in buckets)
        assert buckets != [registry.ab_bucket(kind="sentiment", user_id=f"u{n}")
                           for n in range(1000)]

    def test_ending_the_split_sends_everyone_to_the_active_version(self, registry):
        make_version(name="active", status=Version.ACTIVE, activated_minutes_ago=5)
        candidate = make_version(name="candidate")
        services.set_traffic_split(version_id=candidate.pk, percent=50, actor="admin:boss")
        services.set_traffic_split(version_id=candidate.pk, percent=0, actor="admin:boss")
        registry.registry.refresh()

        assert {registry.serving_version(kind="recommender", user_id=f"u{n}").name
                for n in range(200)} == {"active"}


@pytest.mark.django_db
class TestPastImpressions:
    @staticmethod
    def shown(version: str | None, rec_id: uuid.UUID | None = None):
        from ingestion.demo import DemoImpression

        return DemoImpression(rec_id=rec_id or uuid.uuid4(), user_id="u1", item_ids=["a", "b"],
                              model_version=version, strategy="two_tower" if version else "popular",
                              created_at=timezone.now() - timedelta(days=3))

    def test_stores_them_once_under_retired_versions_that_cannot_be_served(self, model_store):
        history = [self.shown("old"), self.shown("new"), self.shown(None)]

        assert services.store_past_impressions(impressions=history, version_names=["old", "new"],
                                               note="demo") == 3
        assert services.store_past_impressions(impressions=history, version_names=["old", "new"],
                                               note="demo") == 0

        assert Impression.objects.filter(model_version__name="old").count() == 1
        assert Impression.objects.filter(model_version=None, strategy="popular").count() == 1
        old = ModelVersion.objects.get(name="old")
        assert (old.status, old.activated_at) == (Version.RETIRED, None)
        with pytest.raises(services.RegistryActionRefused, match="cannot serve"):
            services.promote_version(version_id=old.pk, actor="admin:boss")
        with pytest.raises(services.RegistryActionRefused, match="No earlier"):
            services.roll_back(kind="recommender", actor="admin:boss")


class TestJobsThroughFailures:
    """What a database blip, a cancel at the wrong moment, the time limit or Ctrl-C leave."""

    def test_progress_that_could_not_be_stored_does_not_end_the_training(
            self, monkeypatch, model_store):
        from django.db import OperationalError
        from django.db.models.query import QuerySet

        update = QuerySet.update
        failures = ["server closed the connection unexpectedly"]

        def update_failing_once(queryset, **fields):
            if failures:
                raise OperationalError(failures.pop())
            return update(queryset, **fields)

        def pipeline(reporter):
            monkeypatch.setattr(QuerySet, "update", update_failing_once)
            reporter.on_epoch_end(1, {"loss": 2.5})  # its write fails
            reporter.on_epoch_end(2, {"loss": 1.5})
            monkeypatch.setattr(QuerySet, "update", update)
            return make_version(name="recommender-new")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.SUCCEEDED
        assert [entry["epoch"] for entry in job.progress] == [1, 2]

    def test_cancelling_a_job_whose_worker_died_ends_it_at_once(self):
        job = stale_running_job(attempts=1)

        cancelled = services.request_cancel(job_id=job.pk, actor="admin:boss")

        assert cancelled.status == Status.CANCELLED and cancelled.finished_at
        assert "stopped responding" in cancelled.log

    def test_recovery_and_a_redelivered_task_end_a_job_asked_to_stop(self, monkeypatch):
        enqueued = []
        monkeypatch.setattr(services, "_enqueue", lambda job: enqueued.append(job.pk))
        recovered = stale_running_job(attempts=1)
        redelivered = stale_running_job(attempts=1, kind="sentiment")
        TrainingJob.objects.filter(pk__in=[recovered.pk, redelivered.pk]).update(
            cancel_requested=True)

        assert services.run_training_job(job_id=redelivered.pk) is None
        services.recover_stale_jobs()

        assert enqueued == []
        for job in (recovered, redelivered):
            job.refresh_from_db()
            assert job.status == Status.CANCELLED and job.attempts == 1

    def test_an_attempt_re_queued_by_recovery_still_ends_the_job_it_finished(
            self, monkeypatch, model_store):
        def pipeline(reporter):
            # Recovery found this attempt's heartbeat stale and queued the job again; no
            # worker has claimed it yet, and this attempt was alive after all.
            TrainingJob.objects.filter(pk=reporter.job.pk).update(status=Status.QUEUED)
            assert not reporter.should_stop(now=True)
            return make_version(name="recommender-late")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.SUCCEEDED and job.model_version.name == "recommender-late"

    def test_an_attempt_a_newer_one_took_over_stops_and_leaves_the_job_to_it(
            self, monkeypatch):
        def pipeline(reporter):
            TrainingJob.objects.filter(pk=reporter.job.pk).update(attempts=2)  # claimed anew
            if reporter.should_stop(now=True):
                raise TrainingCancelled()
            raise AssertionError("never stopped")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert (job.status, job.attempts) == (Status.RUNNING, 2)

    def test_a_cancelled_attempt_whose_worker_was_only_quiet_stops_at_its_next_check(
            self, monkeypatch):
        def pipeline(reporter):
            long_ago = timezone.now() - timedelta(hours=1)
            TrainingJob.objects.filter(pk=reporter.job.pk).update(heartbeat_at=long_ago)
            services.request_cancel(job_id=reporter.job.pk, actor="admin:boss")
            if reporter.should_stop(now=True):
                raise TrainingCancelled()
            raise AssertionError("never stopped")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.status == Status.CANCELLED and "stopped responding" in job.log

    def test_progress_that_did_not_converge_is_stored(self, monkeypatch, model_store):
        def pipeline(reporter):
            reporter.on_epoch_end(1, {"loss": float("nan"), "val_auc": 0.5})
            return make_version(name="recommender-nan")

        replace_pipeline(monkeypatch, "recommender", pipeline)
        job = services.run_training_job(job_id=queued_job().pk)

        assert job.progress == [{"epoch": 1, "loss": None, "val_auc": 0.5}]

    # The hook closes the worker's stale connections: outside a test transaction.
    @pytest.mark.django_db(transaction=True)
    def test_a_job_killed_at_the_time_limit_fails_instead_of_running_again(self):
        from celery.exceptions import TimeLimitExceeded

        from recommender import tasks

        job = stale_running_job(attempts=1)
        TrainingJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now())

        # A task recovery has since replaced with another (a new task id) fails nothing.
        tasks.train_recommender.on_failure(TimeLimitExceeded(3600), "replaced-task",
                                           (job.pk,), {}, None)
        job.refresh_from_db()
        assert job.status == Status.RUNNING

        tasks.train_recommender.on_failure(TimeLimitExceeded(3600), "dead-task", (job.pk,),
                                           {}, None)

        job.refresh_from_db()
        assert job.status == Status.FAILED and "time limit" in job.error
        assert services.recover_stale_jobs() == []

    def test_ctrl_c_in_a_sync_training_cancels_its_job(self, monkeypatch):
        from django.core.management import call_command

        def pipeline(reporter):
            raise KeyboardInterrupt

        replace_pipeline(monkeypatch, "recommender", pipeline)
        with pytest.raises(KeyboardInterrupt):
            call_command("train", "recommender", sync=True)

        job = TrainingJob.objects.get()
        assert job.status == Status.CANCELLED
        assert services.start_training_job(kind="recommender", started_by="test",
                                           enqueue=False)  # the next one may start

    def test_a_job_started_as_the_active_one_finished_is_not_refused(self, monkeypatch):
        from django.db import IntegrityError

        create = TrainingJob.objects.create
        collisions = [IntegrityError("one active job per kind")]

        def create_colliding_once(**fields):
            if collisions:
                raise collisions.pop()  # an active job that finished before the lookup
            return create(**fields)

        monkeypatch.setattr(TrainingJob.objects, "create", create_colliding_once)

        assert queued_job().status == Status.QUEUED
