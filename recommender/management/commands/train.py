import json

from django.core.management.base import BaseCommand, CommandError

from recommender.models import ModelKind
from recommender.services import (
    JobAlreadyActive,
    cancel_interrupted_job,
    run_training_job,
    start_training_job,
)


class Command(BaseCommand):
    help = ("Train a model: enqueue a job on the `training` queue, or with --sync run it here "
            "and print the job's metrics as JSON on the last line.")

    def add_arguments(self, parser):
        parser.add_argument("kind", choices=ModelKind.values)
        parser.add_argument("--sync", action="store_true", help="Run in this process")

    def handle(self, *args, kind: str, sync: bool, **options):
        if sync:
            job = self._start(kind, started_by="cli --sync", enqueue=False)
            job_id = job.pk
            try:
                job = run_training_job(job_id=job_id)
            except KeyboardInterrupt:
                cancel_interrupted_job(job_id=job_id)
                raise
            if job is None:
                raise CommandError(f"Job #{job_id} was taken by another worker or finished.")
            self.stdout.write(f"Job #{job.pk} {job.status}."
                              + (f" {job.error.splitlines()[0]}" if job.error else ""))
            self.stdout.write(json.dumps({"job": job.pk, "status": job.status,
                                          "model_version": getattr(job.model_version, "name",
                                                                   None),
                                          "metrics": job.metrics}))
            if job.status != "succeeded":
                raise CommandError(f"Training {job.status}.")
            return
        job = self._start(kind, started_by="cli", enqueue=True)
        self.stdout.write(f"Queued {kind} job #{job.pk} on the training queue.")

    def _start(self, kind: str, *, started_by: str, enqueue: bool):
        try:
            return start_training_job(kind=kind, started_by=started_by, enqueue=enqueue)
        except JobAlreadyActive as error:
            raise CommandError(str(error)) from None
