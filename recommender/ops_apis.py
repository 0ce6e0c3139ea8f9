"""JSON the ops pages poll: a training job's live progress. Admins only, session auth."""

from django.shortcuts import get_object_or_404
from rest_framework.authentication import SessionAuthentication
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import IsStaff
from recommender.models import TrainingJob

# The page shows the end of the log; the whole log stays on the job and in the admin.
LOG_TAIL_CHARS = 20_000


def job_progress(job: TrainingJob) -> dict:
    return {
        "id": job.pk,
        "kind": job.kind,
        "status": job.status,
        "finished": job.status in TrainingJob.FINISHED,
        "cancel_requested": job.cancel_requested,
        "attempts": job.attempts,
        "progress": job.progress,
        "data_counts": job.data_counts,
        "metrics": job.metrics,
        "error": job.error,
        "log": job.log[-LOG_TAIL_CHARS:],
        "created_at": job.created_at,
        "started_at": job.started_at,
        "heartbeat_at": job.heartbeat_at,
        "finished_at": job.finished_at,
        "duration_seconds": job.duration_seconds,
        "model_version": job.model_version.name if job.model_version else None,
    }


class JobProgressApi(APIView):
    # Staff pages only: kept out of the public API schema and its API-key clients.
    schema = None
    authentication_classes = [SessionAuthentication]
    permission_classes = [IsStaff]

    def get(self, request, job_id: int):
        job = get_object_or_404(TrainingJob.objects.select_related("model_version"), pk=job_id)
        return Response(job_progress(job))
