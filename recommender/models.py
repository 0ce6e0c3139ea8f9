import uuid

from django.db import models


class ModelKind(models.TextChoices):
    RECOMMENDER = "recommender", "Two-tower recommender"
    SENTIMENT = "sentiment", "Review sentiment"


class TrainingJob(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    kind = models.CharField(max_length=32, choices=ModelKind.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    started_by = models.CharField(max_length=255, help_text="Who or what started the job, "
                                                            "e.g. admin:alice, schedule, cli")
    progress = models.JSONField(default=list, blank=True,
                                help_text="One entry per epoch: epoch, loss, validation metrics")
    log = models.TextField(blank=True, default="")
    data_counts = models.JSONField(default=dict, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")
    celery_task_id = models.CharField(max_length=255, blank=True, default="")
    enqueued_at = models.DateTimeField(null=True, blank=True,
                                       help_text="When its task was last sent to the broker")
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True,
                                        help_text="Last sign of life from the worker")
    finished_at = models.DateTimeField(null=True, blank=True)
    model_version = models.ForeignKey("ModelVersion", null=True, blank=True,
                                      on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["kind", "status"], name="job_kind_status")]
        constraints = [
            # The database, not a check-then-insert race, keeps one active job per kind.
            models.UniqueConstraint(fields=["kind"], condition=models.Q(
                status__in=["queued", "running"]), name="one_active_job_per_kind"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} job #{self.pk} ({self.status})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or self.heartbeat_at or self.started_at
        return (end - self.started_at).total_seconds()


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate"
        ACTIVE = "active"
        RETIRED = "retired"

    kind = models.CharField(max_length=32, choices=ModelKind.choices)
    name = models.CharField(max_length=64, unique=True, help_text="Shown in API responses")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    metrics = models.JSONField(default=dict, blank=True)
    baseline_metrics = models.JSONField(default=dict, blank=True)
    params = models.JSONField(default=dict, blank=True)
    data_window_start = models.DateTimeField(null=True, blank=True)
    data_window_end = models.DateTimeField(null=True, blank=True)
    data_counts = models.JSONField(default=dict, blank=True)
    artifact_path = models.CharField(max_length=500)
    checksum = models.CharField(max_length=64, help_text="sha256 over the artifact's files")
    traffic_percent = models.PositiveSmallIntegerField(
        default=0, help_text="A/B test: share of users (sticky) served by this candidate")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=models.Q(status="active"),
                                    name="one_active_version_per_kind"),
        ]

    def __str__(self) -> str:
        return self.name


class ModelAuditEntry(models.Model):
    """Who promoted, rolled back or split traffic, and when."""

    version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="audit")
    action = models.CharField(max_length=32)
    actor = models.CharField(max_length=255)
    note = models.CharField(max_length=500, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "model audit entries"


class Impression(models.Model):
    """One recommendations response; events carrying its rec_id are attributed to it."""

    rec_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    user_id = models.CharField(max_length=255, help_text="External user id as asked for")
    item_ids = models.JSONField(default=list)
    # No index of its own: impression_version starts with it, and each index costs every
    # recommendation request a write.
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, db_index=False,
                                      on_delete=models.SET_NULL, related_name="impressions")
    strategy = models.CharField(max_length=32)
    endpoint = models.CharField(max_length=32, default="recommendations")
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        indexes = [models.Index(fields=["model_version", "created_at"], name="impression_version")]

