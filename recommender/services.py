"""Writes for training jobs and the model registry: start, run, cancel and recover jobs;
register, promote, roll back and A/B-split model versions; store the demo's A/B history."""

import logging
import math
import threading
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from django.conf import settings
from django.db import Error as DjangoDatabaseError
from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from config.db import close_if_broken, lock_until_commit
from recommender.artifacts import ArtifactRefused, artifact_directory, verify_artifact
from recommender.ml.cancellation import TrainingCancelled
from recommender.models import Impression, ModelAuditEntry, ModelKind, ModelVersion, TrainingJob

logger = logging.getLogger(__name__)

Status = TrainingJob.Status
ACTIVE_JOB_STATUSES = (Status.QUEUED, Status.RUNNING)


class JobAlreadyActive(Exception):
    def __init__(self, job: TrainingJob | None):
        super().__init__(f"A {job.kind} job (#{job.pk}) is already {job.status}." if job
                         else "Another job of this kind was started at the same moment.")
        self.job = job


class NotEnoughData(Exception):
    """The shop has too little data to train this kind of model yet."""


class RegistryActionRefused(ValueError):
    """A promote, roll back or traffic split that would leave serving broken or makes no
    sense; the message says why and is meant for the person who asked."""


def start_training_job(*, kind: str, started_by: str, enqueue: bool = True) -> TrainingJob:
    """Queues a job and, unless the caller runs it itself (`enqueue=False`), enqueues its
    task after commit. One active job per kind."""
    if kind not in ModelKind.values:
        raise ValueError(f"Unknown model kind {kind!r}")
    for _ in range(3):
        try:
            with transaction.atomic():
                job = TrainingJob.objects.create(kind=kind, started_by=started_by)
                if enqueue:
                    # robust: a broker outage must not turn a committed job into an error
                    # page; the job stays queued without a task id and recover_stale_jobs
                    # enqueues it.
                    transaction.on_commit(lambda: _enqueue(job), robust=True)
            return job
        except IntegrityError:
            active = TrainingJob.objects.filter(kind=kind, status__in=ACTIVE_JOB_STATUSES).first()
            if active is not None:
                raise JobAlreadyActive(active) from None
            # The active job finished between the insert and the lookup: start again.
    raise JobAlreadyActive(None)


def _send(job: TrainingJob) -> str:
    """Sends the job's task to the broker; returns the task's id."""
    from recommender import tasks

    task = {ModelKind.RECOMMENDER: tasks.train_recommender,
            ModelKind.SENTIMENT: tasks.train_sentiment}[job.kind]
    return task.delay(job.pk).id or ""


def _enqueue(job: TrainingJob) -> None:
    task_id = _send(job)
    TrainingJob.objects.filter(pk=job.pk, celery_task_id="").update(
        celery_task_id=task_id, enqueued_at=timezone.now())


def _enqueue_again(job: TrainingJob, *, now: datetime) -> None:
    """Sends a queued job's task once more. Should the first still arrive, it finds the
    job running or finished and does nothing (tasks._claim)."""
    task_id = _send(job)
    TrainingJob.objects.filter(pk=job.pk, status=Status.QUEUED).update(
        celery_task_id=task_id, enqueued_at=now, log=_appended_to_log(
            f"[{now:%Y-%m-%d %H:%M:%S}] Its task had not started within "
            f"{_queued_too_long() // 60} minutes of being sent; sent again.\n"))


def _queued_too_long() -> int:
    """Seconds after which a queued job's task is taken for lost: one job of the other kind
    may hold the training worker for the whole training time limit before it starts, and
    a task a worker took but could not claim (the database down past its retries) is
    acknowledged and gone."""
    return settings.CELERY_TRAINING_TIME_LIMIT + settings.TRAINING_HEARTBEAT_TIMEOUT


@transaction.atomic
def request_cancel(*, job_id: int, actor: str) -> TrainingJob:
    """A queued job is cancelled at once; a running one stops at its next batch."""
    job = TrainingJob.objects.select_for_update().get(pk=job_id)
    now = timezone.now()
    if job.status == Status.QUEUED:
        job.status = Status.CANCELLED
        job.finished_at = now
        job.log += f"[{now:%Y-%m-%d %H:%M:%S}] Cancelled by {actor} before it started.\n"
        job.save(update_fields=["status", "finished_at", "log"])
    elif job.status == Status.RUNNING and _heartbeat_stale(job, now=now):
        # No worker is left to see the request: the job ends here.
        _cancel_abandoned(job, now=now,
                          line=f"Cancelled by {actor}; its worker had stopped responding.")
    elif job.status == Status.RUNNING:
        job.cancel_requested = True
        job.log += f"[{now:%Y-%m-%d %H:%M:%S}] Cancel requested by {actor}.\n"
        job.save(update_fields=["cancel_requested", "log"])
    return job


def _heartbeat_stale(job: TrainingJob, *, now: datetime) -> bool:
    stale_before = now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT)
    return job.heartbeat_at is None or job.heartbeat_at < stale_before


def _cancel_abandoned(job: TrainingJob, *, now: datetime,
                      line: str = "Its worker stopped before the cancel; cancelled.") -> None:
    """A job asked to stop whose worker died before it could: cancelled, not run again
    (an attempt still alive after all stops at its next check)."""
    job.status = Status.CANCELLED
    job.cancel_requested = True
    job.finished_at = now
    job.log += f"[{now:%Y-%m-%d %H:%M:%S}] {line}\n"
    job.save(update_fields=["status", "cancel_requested", "finished_at", "log"])


def _claim(job_id: int) -> TrainingJob | None:
    """Marks the job running, unless it finished, was cancelled, or another live worker
    holds it. A task the broker redelivers after a crash finds a stale heartbeat and takes
    over, but only within TRAINING_MAX_ATTEMPTS: a job that kills its worker every time
    (out of memory, say) must end as failed instead of crashing workers forever."""
    now = timezone.now()
    with transaction.atomic():
        job = TrainingJob.objects.select_for_update().get(pk=job_id)
        if job.status in TrainingJob.FINISHED:
            return None
        if job.status == Status.RUNNING and not _heartbeat_stale(job, now=now):
            return None
        if job.cancel_requested:
            _cancel_abandoned(job, now=now)
            return None
        if job.attempts >= settings.TRAINING_MAX_ATTEMPTS:
            _fail_lost_job(job, now=now)
            return None
        job.status = Status.RUNNING
        job.started_at = job.started_at or now
        job.heartbeat_at = now
        job.attempts += 1
        job.log += f"[{now:%Y-%m-%d %H:%M:%S}] Started (attempt {job.attempts}).\n"
        job.save(update_fields=["status", "started_at", "heartbeat_at", "attempts", "log"])
    return job


def _appended_to_log(text: str) -> Concat:
    # Appended in the database (`+` on text columns is arithmetic in SQLite, an error in
    # PostgreSQL), so the cancel request's log line written meanwhile is kept.
    return Concat(F("log"), Value(text))


class JobReporter:
    """Progress, log lines, heartbeats and the cancel check for one running job.

    The database is touched at most every few seconds from the per-batch check, so the
    cancel flag costs nothing measurable in training throughput."""

    CHECK_EVERY_SECONDS = 2.0

    def __init__(self, job: TrainingJob):
        self.job = job
        self._last_check = 0.0
        self._cancelled = False

    def log(self, line: str) -> None:
        stamped = f"[{timezone.now():%Y-%m-%d %H:%M:%S}] {line}\n"
        self._write(log=_appended_to_log(stamped), heartbeat_at=timezone.now())
        logger.info("job %s: %s", self.job.pk, line)

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        # A diverged loss is NaN, which PostgreSQL's jsonb refuses: it is stored as null.
        entry = {"epoch": epoch, **{k: round(float(v), 6) if math.isfinite(float(v)) else None
                                    for k, v in logs.items()}}
        self.job.progress = [*self.job.progress, entry]
        self.job.heartbeat_at = timezone.now()
        self._write(progress=self.job.progress, heartbeat_at=self.job.heartbeat_at)
        self.log("epoch " + ", ".join(f"{k}={v}" for k, v in entry.items() if k != "epoch")
                 + f" ({entry['epoch']})")

    def _write(self, **fields: Any) -> bool:
        """Stores progress as it comes (on the job while this attempt holds it), as far as
        the database lets it: a connection lost for a moment (a failover, a dropped idle
        connection) must not end hours of training, and the next write reconnects."""
        try:
            TrainingJob.objects.filter(pk=self.job.pk, attempts=self.job.attempts).update(
                **fields)
            return True
        except (OperationalError, InterfaceError):
            logger.warning("Progress of job %s not stored", self.job.pk, exc_info=True)
            close_if_broken()
            return False

    @property
    def stop_requested(self) -> bool:
        """Whether should_stop has told the training loop to stop."""
        return self._cancelled

    def should_stop(self, *, now: bool = False) -> bool:
        """Whether the job was asked to stop, looked up every CHECK_EVERY_SECONDS (`now`:
        at once, before a step that cannot be undone)."""
        checked_at = time.monotonic()
        if not self._cancelled and (now or checked_at - self._last_check
                                    >= self.CHECK_EVERY_SECONDS):
            self._last_check = checked_at
            if self._write(heartbeat_at=timezone.now()):
                # Stop when cancelled, and when the job is no longer this attempt's: it
                # was cancelled or failed meanwhile, or a newer attempt claimed it.
                self._cancelled = not TrainingJob.objects.filter(
                    pk=self.job.pk, attempts=self.job.attempts,
                    status__in=ACTIVE_JOB_STATUSES, cancel_requested=False).exists()
        return self._cancelled

    def record(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self.job, name, value)
        self._write(**fields)


class _Heartbeat:
    """Keeps a running job's heartbeat fresh from a side thread, so phases without training
    batches (reading events, evaluating on the holdout, saving) never make a live worker
    look dead to recover_stale_jobs, which would queue a second run of the job."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.every_seconds = settings.TRAINING_HEARTBEAT_TIMEOUT / 4
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"job-{job_id}-heartbeat",
                                        daemon=True)

    def __enter__(self) -> "_Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stop.set()
        # A beat stuck on the database must not hold up the job's end; a late one only
        # touches a running job, which this one no longer is.
        self._thread.join(timeout=self.every_seconds)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.every_seconds):
                try:
                    TrainingJob.objects.filter(pk=self.job_id, status=Status.RUNNING).update(
                        heartbeat_at=timezone.now())
                except DjangoDatabaseError:  # InterfaceError included
                    logger.warning("Heartbeat of job %s not stored", self.job_id,
                                   exc_info=True)
                    connection.close()  # the next beat reconnects
        finally:
            connection.close()  # this thread's own connection


Pipeline = Callable[[JobReporter], ModelVersion]


def run_training_job(*, job_id: int) -> TrainingJob | None:
    """Runs a claimed job to its end: succeeded (a version registered, promoted when it
    wins), cancelled, or failed with the error. The active model keeps serving throughout."""
    job = _claim(job_id)
    if job is None:
        return None
    from recommender.training import PIPELINES

    reporter = JobReporter(job)
    try:
        with _Heartbeat(job.pk):
            version = PIPELINES[job.kind](reporter)
    except NotEnoughData as error:
        _finish(job, status=Status.FAILED, error=str(error), log=f"Not enough data: {error}")
    except Exception as error:
        # What failed may have been the connection itself: the job's end is written on a
        # new one, or it would stay "running" with nothing running it.
        close_if_broken()
        if isinstance(error, TrainingCancelled) or reporter.stop_requested:
            # A training loop told to stop ends by raising; whichever exception it raises
            # (Keras may wrap what a callback raised), the job was cancelled, not failed.
            _finish(job, status=Status.CANCELLED, log="Cancelled at the next batch.")
        else:
            logger.exception("Training job %s failed", job.pk)
            _finish(job, status=Status.FAILED, error="".join(
                traceback.format_exception_only(type(error), error)).strip() + "\n\n"
                + traceback.format_exc(), log=f"Failed: {error}")
    else:
        _finish(job, status=Status.SUCCEEDED, model_version=version,
                log=f"Registered {version.name} ({version.status}).")
    job.refresh_from_db()
    return job


def _finish(job: TrainingJob, *, status: str, log: str, error: str = "",
            model_version: ModelVersion | None = None) -> None:
    """Ends the job from this attempt, unless it ended meanwhile (cancelled while its
    worker looked dead, failed at the time limit) or a newer attempt claimed it. Re-queued
    by recovery and not yet claimed, it is still this attempt's to end."""
    now = timezone.now()
    TrainingJob.objects.filter(pk=job.pk, status__in=ACTIVE_JOB_STATUSES,
                               attempts=job.attempts).update(
        status=status, error=error, finished_at=now, heartbeat_at=now, model_version=model_version,
        log=_appended_to_log(f"[{now:%Y-%m-%d %H:%M:%S}] {log}\n"))


def cancel_interrupted_job(*, job_id: int) -> None:
    """`manage.py train --sync` stopped with Ctrl-C: no worker is left to end the job, and
    a job left running would refuse every later one of its kind until recovery ran (which
    would run it again)."""
    close_if_broken()  # Ctrl-C may have cut a query short
    now = timezone.now()
    TrainingJob.objects.filter(pk=job_id, status=Status.RUNNING).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now,
        log=_appended_to_log(f"[{now:%Y-%m-%d %H:%M:%S}] Interrupted; cancelled.\n"))


def fail_timed_out_job(*, job_id: int, task_id: str) -> None:
    """The worker killed the job's task `task_id` at the training time limit (the soft
    limit before it did not end it): the job fails here, rather than look like a lost
    worker to recovery and run for another whole time limit; unless recovery had sent the
    job again (a new task id) while that task still ran."""
    now = timezone.now()
    TrainingJob.objects.filter(pk=job_id, status=Status.RUNNING, celery_task_id=task_id).update(
        status=Status.FAILED, finished_at=now,
        error=f"Stopped at the training time limit ({settings.CELERY_TRAINING_TIME_LIMIT} s).",
        log=_appended_to_log(f"[{now:%Y-%m-%d %H:%M:%S}] Stopped at the time limit; "
                             "failed.\n"))


def recover_stale_jobs() -> list[int]:
    """A running job whose worker stopped sending heartbeats is re-queued while it has
    attempts left, then failed; a queued job that never reached the broker (it was down
    when the job was started) is enqueued, and one whose task was lost after it did
    (_queued_too_long) is sent again. Nothing stays "running" or "queued" forever.

    Each job is handled in its own transaction so one bad row cannot hold up the rest."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.TRAINING_HEARTBEAT_TIMEOUT)
    recovered = []
    stale = TrainingJob.objects.filter(status=Status.RUNNING, heartbeat_at__lt=stale_before)
    for job_id in stale.values_list("pk", flat=True):
        with transaction.atomic():
            job = TrainingJob.objects.select_for_update().get(pk=job_id)
            if job.status != Status.RUNNING or job.heartbeat_at >= stale_before:
                continue
            if job.cancel_requested:
                _cancel_abandoned(job, now=now)
            elif job.attempts < settings.TRAINING_MAX_ATTEMPTS:
                job.status = Status.QUEUED
                job.celery_task_id = ""
                job.log += f"[{now:%Y-%m-%d %H:%M:%S}] Worker stopped responding; re-queued.\n"
                job.save(update_fields=["status", "celery_task_id", "log"])
                transaction.on_commit(lambda job=job: _enqueue(job), robust=True)
            else:
                _fail_lost_job(job, now=now)
        recovered.append(job_id)
    never_enqueued = TrainingJob.objects.filter(
        status=Status.QUEUED, celery_task_id="", created_at__lt=stale_before).exclude(
        pk__in=recovered)
    for job in never_enqueued:
        _enqueue_robustly(job)
        recovered.append(job.pk)
    sent_before = now - timedelta(seconds=_queued_too_long())
    lost = (TrainingJob.objects.filter(status=Status.QUEUED).exclude(celery_task_id="")
            .filter(Q(enqueued_at__lt=sent_before)
                    | Q(enqueued_at__isnull=True, created_at__lt=sent_before))
            .exclude(pk__in=recovered))
    for job in lost:
        try:
            _enqueue_again(job, now=now)
        except Exception:
            logger.exception("Could not send training job %s again; the next recovery retries",
                             job.pk)
        recovered.append(job.pk)
    return recovered


def _enqueue_robustly(job: TrainingJob) -> None:
    try:
        _enqueue(job)
    except Exception:
        logger.exception("Could not enqueue training job %s; the next recovery retries", job.pk)


def _fail_lost_job(job: TrainingJob, *, now: datetime) -> None:
    job.status = Status.FAILED
    job.finished_at = now
    job.error = (f"The worker running this job stopped responding "
                 f"({job.attempts} attempt(s) of {settings.TRAINING_MAX_ATTEMPTS}).")
    job.log += f"[{now:%Y-%m-%d %H:%M:%S}] Worker stopped responding; failed.\n"
    job.save(update_fields=["status", "finished_at", "error", "log"])


# Key of the PostgreSQL advisory locks under which a kind's active version changes, one per
# kind (the second key): a promotion, a rollback and a training job's auto-promotion take
# turns, and each sees the active version the one before it left.
REGISTRY_LOCK = 0x52656769


def _lock_activations(kind: str) -> None:
    lock_until_commit(REGISTRY_LOCK, zlib.crc32(kind.encode()) & 0x7FFFFFFF,
                      sqlite_table_of=ModelVersion)


@transaction.atomic
def register_version(*, kind: str, name: str, artifact_path: str, checksum: str,
                     metrics: dict, baseline_metrics: dict, params: dict, data_counts: dict,
                     data_window: tuple | None, promote_if: bool, reason: str,
                     compared_with: ModelVersion | None) -> ModelVersion:
    """Records a trained version; it becomes active only when `promote_if` (it beat the
    active version, `compared_with`, and the baseline), otherwise it
    stays a candidate. It stays one too where the active version is no longer the one it
    was compared with (an admin promoted or rolled back while the job evaluated it against
    the version active then): that choice is not undone by a comparison against another
    version. A promotion during the training itself is what the job compares with."""
    version = ModelVersion.objects.create(
        kind=kind, name=name, artifact_path=artifact_path, checksum=checksum, metrics=metrics,
        baseline_metrics=baseline_metrics, params=params, data_counts=data_counts,
        data_window_start=data_window[0] if data_window else None,
        data_window_end=data_window[1] if data_window else None)
    if promote_if:
        _lock_activations(kind)
        active = ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.ACTIVE).first()
        if getattr(active, "pk", None) == getattr(compared_with, "pk", None):
            _activate(version, actor="training", action="auto-promote", note=reason)
            return version
        reason += (f"; not promoted: the active version became "
                   f"{active.name if active else 'none'} while this one was evaluated")
    ModelAuditEntry.objects.create(version=version, action="kept-candidate",
                                   actor="training", note=reason[:500])
    return version


def _activate(version: ModelVersion, *, actor: str, action: str, note: str = "") -> None:
    now = timezone.now()
    ModelVersion.objects.filter(kind=version.kind, status=ModelVersion.Status.ACTIVE).exclude(
        pk=version.pk).update(status=ModelVersion.Status.RETIRED)
    version.status = ModelVersion.Status.ACTIVE
    version.activated_at = now
    version.traffic_percent = 0
    version.save(update_fields=["status", "activated_at", "traffic_percent"])
    ModelAuditEntry.objects.create(version=version, action=action, actor=actor, note=note[:500])


def _require_loadable(version: ModelVersion) -> None:
    """Web processes refuse an artifact that fails its checksum and keep serving the old
    version, so activating such a version would only make /readyz fail: refuse up front."""
    try:
        verify_artifact(directory=artifact_directory(kind=version.kind, name=version.name),
                        checksum=version.checksum)
    except ArtifactRefused as error:
        raise RegistryActionRefused(f"{version.name} cannot serve: {error}") from None


@transaction.atomic
def promote_version(*, version_id: int, actor: str) -> ModelVersion:
    _lock_activations(ModelVersion.objects.values_list("kind", flat=True).get(pk=version_id))
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.status == ModelVersion.Status.ACTIVE:
        raise RegistryActionRefused(f"{version.name} is already active.")
    _require_loadable(version)
    _activate(version, actor=actor, action="promote")
    return version


def version_to_roll_back_to(*, kind: str) -> ModelVersion | None:
    """The most recently activated version of the kind other than the active one."""
    return (ModelVersion.objects.filter(kind=kind, activated_at__isnull=False)
            .exclude(status=ModelVersion.Status.ACTIVE).order_by("-activated_at").first())


@transaction.atomic
def roll_back(*, kind: str, actor: str) -> ModelVersion:
    """Re-activates the version that was active before the current one."""
    _lock_activations(kind)
    current = ModelVersion.objects.select_for_update().filter(
        kind=kind, status=ModelVersion.Status.ACTIVE).first()
    previous = version_to_roll_back_to(kind=kind)
    if previous is None:
        raise RegistryActionRefused(f"No earlier {kind} version to roll back to.")
    _require_loadable(previous)
    _activate(previous, actor=actor, action="rollback",
              note=f"rolled back from {current.name}" if current else "")
    return previous


@transaction.atomic
def set_traffic_split(*, version_id: int, percent: int, actor: str) -> ModelVersion:
    """Sends `percent` of users (sticky per person, see serving.ab_bucket: a person's
    linked ids share it) to a candidate recommender while the active version serves the
    rest; 0 ends the test. One split at a time."""
    if not 0 <= percent <= 100:
        raise RegistryActionRefused("The share of users must be between 0 and 100 percent.")
    # In turn with promotions, rollbacks and other splits: two splits at once could each
    # leave a candidate with a share.
    _lock_activations(ModelVersion.objects.values_list("kind", flat=True).get(pk=version_id))
    version = ModelVersion.objects.select_for_update().get(pk=version_id)
    if version.kind != ModelKind.RECOMMENDER and percent:
        # Texts are scored without a user (API calls, event backfills), so there is no
        # sticky user to split on: a sentiment candidate is compared offline, then promoted.
        raise RegistryActionRefused("A/B splits are for recommender versions; promote a "
                                    "sentiment version to serve it.")
    if version.status == ModelVersion.Status.ACTIVE:
        raise RegistryActionRefused(
            f"{version.name} is active and already serves everyone outside the test.")
    if percent:
        _require_loadable(version)
    ModelVersion.objects.filter(kind=version.kind, traffic_percent__gt=0).exclude(
        pk=version.pk).update(traffic_percent=0)
    version.traffic_percent = percent
    if percent and version.status == ModelVersion.Status.RETIRED:
        version.status = ModelVersion.Status.CANDIDATE
    version.save(update_fields=["traffic_percent", "status"])
    ModelAuditEntry.objects.create(version=version, action="traffic-split", actor=actor,
                                   note=f"{percent}% of users")
    return version


class PastImpression(Protocol):
    rec_id: Any
    user_id: str
    item_ids: list[str]
    model_version: str | None
    strategy: str
    created_at: datetime


@transaction.atomic
def store_past_impressions(*, impressions: Sequence[PastImpression],
                           version_names: Sequence[str], note: str,
                           batch_size: int = 5000) -> int:
    """Stores recommendations served before this database knew of them (the demo shop's A/B
    test) and returns how many were new; a rec_id stored already is skipped. The versions
    they name are registered as retired, without an artifact and never activated: the
    dashboards compare them, while promoting one, or rolling back to it, is refused."""
    versions = {name: ModelVersion.objects.get_or_create(
        name=name, defaults={"kind": ModelKind.RECOMMENDER, "status": ModelVersion.Status.RETIRED,
                             "artifact_path": "", "checksum": "",
                             "params": {"note": note}})[0]
        for name in version_names}
    before = Impression.objects.count()
    Impression.objects.bulk_create(
        (Impression(rec_id=shown.rec_id, user_id=shown.user_id, item_ids=shown.item_ids,
                    model_version=versions[shown.model_version] if shown.model_version else None,
                    strategy=shown.strategy, created_at=shown.created_at)
         for shown in impressions), batch_size=batch_size, ignore_conflicts=True)
    return Impression.objects.count() - before
