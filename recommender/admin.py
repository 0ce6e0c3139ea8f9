from django.contrib import admin, messages
from django.urls import reverse

from recommender import services
from recommender.models import Impression, ModelAuditEntry, ModelVersion, TrainingJob


class DeletesOneAtATimeAdmin(admin.ModelAdmin):
    """Rows deleted one at a time, and only those `deletable` allows: the bulk delete would
    not ask has_delete_permission about each row."""

    def deletable(self, obj) -> bool:
        return True

    def has_delete_permission(self, request, obj=None):
        if obj is not None and not self.deletable(obj):
            return False
        return super().has_delete_permission(request, obj)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


@admin.register(TrainingJob)
class TrainingJobAdmin(DeletesOneAtATimeAdmin):
    list_display = ("id", "kind", "status", "started_by", "created_at", "started_at",
                    "finished_at", "model_version")
    list_filter = ("kind", "status")
    readonly_fields = [f.name for f in TrainingJob._meta.fields]
    actions = ["cancel_jobs"]

    def has_add_permission(self, request):
        return False

    def deletable(self, obj: TrainingJob) -> bool:
        # A queued or running job is cancelled first: deleted, its worker trained on (a
        # second job of the kind could start beside it) and failed on the missing row.
        return obj.status not in services.ACTIVE_JOB_STATUSES

    def view_on_site(self, obj):
        # "View on site" opens the ops page with the job's live progress chart.
        return reverse("ops:job", args=[obj.pk])

    # Changing a job's course takes the change permission, not a view-only account's.
    @admin.action(description="Cancel selected jobs", permissions=["change"])
    def cancel_jobs(self, request, queryset):
        for job in queryset:
            services.request_cancel(job_id=job.pk, actor=f"admin:{request.user.username}")
        self.message_user(request, f"Cancel requested for {queryset.count()} job(s).")


class AuditInline(admin.TabularInline):
    model = ModelAuditEntry
    extra = 0
    can_delete = False
    readonly_fields = ("action", "actor", "note", "created_at")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(ModelVersion)
class ModelVersionAdmin(DeletesOneAtATimeAdmin):
    list_display = ("name", "kind", "status", "traffic_percent", "created_at", "activated_at")
    list_filter = ("kind", "status")
    readonly_fields = ("name", "kind", "status", "metrics", "baseline_metrics", "params",
                       "data_window_start", "data_window_end", "data_counts", "artifact_path",
                       "checksum", "traffic_percent", "created_at", "activated_at")
    inlines = [AuditInline]
    actions = ["promote"]

    def has_add_permission(self, request):
        return False

    def deletable(self, obj: ModelVersion) -> bool:
        # A version serving users (active, or a candidate with a share) is rolled back or
        # taken out of the split first.
        return obj.status != ModelVersion.Status.ACTIVE and not obj.traffic_percent

    @admin.action(description="Promote the selected version to active", permissions=["change"])
    def promote(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        try:
            version = services.promote_version(version_id=queryset.get().pk,
                                               actor=f"admin:{request.user.username}")
        except services.RegistryActionRefused as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        self.message_user(request, f"{version.name} is now active.")


@admin.register(Impression)
class ImpressionAdmin(admin.ModelAdmin):
    list_display = ("rec_id", "user_id", "strategy", "model_version", "endpoint", "created_at")
    list_filter = ("strategy", "endpoint")
    readonly_fields = [f.name for f in Impression._meta.fields]
    show_full_result_count = False
