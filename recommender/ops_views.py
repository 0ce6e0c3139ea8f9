"""Admin pages for training jobs and model versions; the work happens in services. A page
that changes what is trained or served takes the model's Django permission as well as
staff status, as the admin's actions do: a view-only staff account looks and changes
nothing (superusers hold every permission)."""

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.html import format_html
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from accounts.permissions import staff_required
from recommender import services
from recommender.models import ModelAuditEntry, ModelKind, ModelVersion, TrainingJob

JOBS_SHOWN = 50
AUDIT_ENTRIES_SHOWN = 20

# Holdout metrics shown side by side, and the baseline each kind is compared with.
METRIC_COLUMNS = {
    ModelKind.RECOMMENDER: ("hr@10", "ndcg@10", "recall@50", "coverage"),
    ModelKind.SENTIMENT: ("accuracy", "macro_f1", "roc_auc"),
}
BASELINE_NAMES = {ModelKind.RECOMMENDER: "popularity", ModelKind.SENTIMENT: "vader"}


def _actor(request) -> str:
    return f"admin:{request.user.get_username()}"


@require_GET
@staff_required
def job_list(request):
    jobs = TrainingJob.objects.select_related("model_version")[:JOBS_SHOWN]
    active = {job.kind: job for job in TrainingJob.objects.filter(
        status__in=services.ACTIVE_JOB_STATUSES)}
    kinds = [{"value": kind, "label": label, "active_job": active.get(kind)}
             for kind, label in ModelKind.choices]
    return render(request, "ops/job_list.html", {"jobs": jobs, "kinds": kinds})


@require_GET
@staff_required
def job_detail(request, job_id: int):
    job = get_object_or_404(TrainingJob.objects.select_related("model_version"), pk=job_id)
    # Pairs, not dicts: a template's `counts.items` would look up a count named "items".
    return render(request, "ops/job_detail.html", {
        "job": job, "data_counts": list(job.data_counts.items()),
        "metrics": [(name, value) for name, value in job.metrics.items() if name != "training"],
    })


@require_POST
@staff_required
@permission_required("recommender.add_trainingjob", raise_exception=True)
def train_now(request):
    kind = request.POST.get("kind", "")
    if kind not in ModelKind.values:
        messages.error(request, f"Unknown model kind {kind!r}.")
        return redirect("ops:jobs")
    try:
        job = services.start_training_job(kind=kind, started_by=_actor(request))
    except services.JobAlreadyActive as error:
        if error.job is None:
            messages.error(request, str(error))
            return redirect("ops:jobs")
        messages.error(request, format_html(
            'A {} job is already {}: <a href="{}">job #{}</a>. Wait for it to finish or '
            "cancel it before starting another.", kind, error.job.status,
            reverse("ops:job", args=[error.job.pk]), error.job.pk))
        return redirect("ops:jobs")
    messages.success(request, f"Queued {kind} job #{job.pk}.")
    return redirect("ops:job", job_id=job.pk)


@require_POST
@staff_required
@permission_required("recommender.change_trainingjob", raise_exception=True)
def cancel_job(request, job_id: int):
    before = get_object_or_404(TrainingJob, pk=job_id).status
    job = services.request_cancel(job_id=job_id, actor=_actor(request))
    if job.status == TrainingJob.Status.CANCELLED and before == TrainingJob.Status.RUNNING:
        messages.success(request, f"Job #{job.pk} was cancelled; its worker had stopped "
                                  "responding.")
    elif job.status == TrainingJob.Status.CANCELLED and before == TrainingJob.Status.QUEUED:
        messages.success(request, f"Job #{job.pk} was cancelled before it started.")
    elif job.status == TrainingJob.Status.RUNNING and job.cancel_requested:
        messages.success(request, f"Job #{job.pk} stops at its next batch.")
    else:
        messages.info(request, f"Job #{job.pk} had already {job.status}; nothing to cancel.")
    return redirect("ops:job", job_id=job.pk)


def _version_row(version: ModelVersion) -> dict:
    columns = METRIC_COLUMNS[version.kind]
    baseline = version.baseline_metrics.get(BASELINE_NAMES[version.kind], {})
    return {
        "version": version,
        "metrics": [version.metrics.get(name) for name in columns],
        "baseline": [baseline.get(name) for name in columns],
    }


@require_GET
@staff_required
def model_versions(request):
    sections = []
    for kind, label in ModelKind.choices:
        versions = ModelVersion.objects.filter(kind=kind)
        sections.append({
            "kind": kind, "label": label, "columns": METRIC_COLUMNS[kind],
            "baseline_name": BASELINE_NAMES[kind],
            "rows": [_version_row(version) for version in versions],
            "roll_back_to": services.version_to_roll_back_to(kind=kind),
        })
    audit = ModelAuditEntry.objects.select_related("version")[:AUDIT_ENTRIES_SHOWN]
    return render(request, "ops/model_versions.html", {"sections": sections, "audit": audit})


@require_http_methods(["GET", "POST"])
@staff_required
@permission_required("recommender.change_modelversion", raise_exception=True)
def promote(request, version_id: int):
    version = get_object_or_404(ModelVersion, pk=version_id)
    if request.method == "GET":
        active = ModelVersion.objects.filter(kind=version.kind,
                                             status=ModelVersion.Status.ACTIVE).first()
        return render(request, "ops/confirm.html", {
            "title": f"Promote {version.name}?",
            "question": f"{version.name} will serve every {version.kind} request"
                        + (f" instead of {active.name}" if active else "")
                        + ". Web processes switch within seconds.",
            "action": "Promote", "cancel_url": reverse("ops:models")})
    try:
        services.promote_version(version_id=version.pk, actor=_actor(request))
    except services.RegistryActionRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"{version.name} is now the active {version.kind} model.")
    return redirect("ops:models")


@require_http_methods(["GET", "POST"])
@staff_required
@permission_required("recommender.change_modelversion", raise_exception=True)
def roll_back(request, kind: str):
    if kind not in ModelKind.values:
        return redirect("ops:models")
    if request.method == "GET":
        target = services.version_to_roll_back_to(kind=kind)
        if target is None:
            messages.error(request, f"No earlier {kind} version to roll back to.")
            return redirect("ops:models")
        return render(request, "ops/confirm.html", {
            "title": f"Roll back the {kind} model?",
            "question": f"{target.name}, the version active before the current one, will "
                        f"serve every {kind} request again.",
            "action": "Roll back", "cancel_url": reverse("ops:models")})
    try:
        version = services.roll_back(kind=kind, actor=_actor(request))
    except services.RegistryActionRefused as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Rolled back: {version.name} is the active {kind} model.")
    return redirect("ops:models")


@require_POST
@staff_required
@permission_required("recommender.change_modelversion", raise_exception=True)
def traffic_split(request, version_id: int):
    try:
        percent = int(request.POST.get("percent", ""))
    except ValueError:
        messages.error(request, "Give the share of users as a whole number of percent.")
        return redirect("ops:models")
    try:
        version = services.set_traffic_split(version_id=version_id, percent=percent,
                                             actor=_actor(request))
    except services.RegistryActionRefused as error:
        messages.error(request, str(error))
    except ModelVersion.DoesNotExist:
        messages.error(request, f"No model version #{version_id}.")
    else:
        messages.success(request, f"{version.name} now serves {percent}% of users."
                         if percent else f"A/B test of {version.name} ended.")
    return redirect("ops:models")
