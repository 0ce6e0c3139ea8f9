"""The staff pages for training jobs and model versions, and the progress JSON they poll."""

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from recommender import services
from recommender.models import ModelAuditEntry, ModelVersion, TrainingJob
from tests.recommender.test_services import make_version

pytestmark = pytest.mark.django_db

Status = TrainingJob.Status


@pytest.fixture
def staff(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def staff_with_csrf(admin_user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    return client


def queued_job(kind: str = "recommender") -> TrainingJob:
    return services.start_training_job(kind=kind, started_by="test", enqueue=False)


def page_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


class TestAccess:
    PAGES = ["ops:jobs", "ops:models"]

    @pytest.mark.parametrize("page", PAGES)
    def test_anonymous_visitors_are_sent_to_log_in(self, client, page):
        response = client.get(reverse(page))

        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login") + "?next=")

    @pytest.mark.parametrize("page", PAGES)
    def test_product_managers_are_refused(self, client, pm_user, page):
        client.force_login(pm_user)

        assert client.get(reverse(page)).status_code == 403

    def test_product_managers_cannot_start_jobs(self, client, pm_user):
        client.force_login(pm_user)

        response = client.post(reverse("ops:train"), {"kind": "recommender"})

        assert response.status_code == 403
        assert not TrainingJob.objects.exists()


class TestJobs:
    def test_the_list_shows_jobs_and_a_train_button_per_kind(self, staff):
        job = queued_job("sentiment")

        response = staff.get(reverse("ops:jobs"))

        assert response.status_code == 200
        html = response.content.decode()
        assert html.count('name="kind"') == 2
        assert reverse("ops:job", args=[job.pk]) in html
        assert "Review sentiment" in html

    def test_train_now_queues_a_job_and_shows_it(self, staff, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            response = staff.post(reverse("ops:train"), {"kind": "recommender"})

        job = TrainingJob.objects.get()
        assert response.status_code == 302
        assert response["Location"] == reverse("ops:job", args=[job.pk])
        assert (job.kind, job.status, job.started_by) == ("recommender", "queued", "admin:boss")
        assert len(callbacks) == 1  # the task is sent once the job is committed

    def test_train_now_needs_the_csrf_token(self, staff_with_csrf):
        response = staff_with_csrf.post(reverse("ops:train"), {"kind": "recommender"})

        assert response.status_code == 403
        assert not TrainingJob.objects.exists()

    def test_a_second_job_of_the_kind_is_refused_with_a_message(self, staff):
        running = queued_job()
        TrainingJob.objects.filter(pk=running.pk).update(status=Status.RUNNING)

        response = staff.post(reverse("ops:train"), {"kind": "recommender"}, follow=True)

        assert TrainingJob.objects.count() == 1
        (message,) = page_messages(response)
        assert f"already running: <a href=\"{reverse('ops:job', args=[running.pk])}\">" \
            in message

    def test_the_detail_page_shows_progress_logs_and_counts(self, staff):
        job = queued_job()
        TrainingJob.objects.filter(pk=job.pk).update(
            status=Status.RUNNING, data_counts={"interactions": 360, "items": 45},
            log="[2026-01-01 02:00:00] Data: {'interactions': 360}\n")

        response = staff.get(reverse("ops:job", args=[job.pk]))

        html = response.content.decode()
        assert response.status_code == 200
        assert reverse("ops:job-progress", args=[job.pk]) in html
        assert "<dt>interactions</dt><dd>360</dd>" in html
        assert "<dt>items</dt><dd>45</dd>" in html
        assert reverse("ops:cancel", args=[job.pk]) in html
        assert "ops/job_progress.js" in html and "chartjs/chart.umd.min.js" in html

    def test_the_admin_links_a_job_to_its_live_progress(self, staff):
        job = queued_job()

        response = staff.get(reverse("admin:recommender_trainingjob_change", args=[job.pk]))

        assert reverse("ops:job", args=[job.pk]) in response.content.decode()

    def test_cancel_a_queued_job(self, staff):
        job = queued_job()

        response = staff.post(reverse("ops:cancel", args=[job.pk]), follow=True)

        job.refresh_from_db()
        assert job.status == Status.CANCELLED
        assert page_messages(response) == [f"Job #{job.pk} was cancelled before it started."]

    def test_cancelling_a_job_that_does_not_exist_is_a_404(self, staff):
        assert staff.post(reverse("ops:cancel", args=[999_999])).status_code == 404

    def test_cancel_a_running_job_asks_the_worker_to_stop(self, staff):
        job = queued_job()
        TrainingJob.objects.filter(pk=job.pk).update(status=Status.RUNNING,
                                                     heartbeat_at=timezone.now())

        staff.post(reverse("ops:cancel", args=[job.pk]))

        job.refresh_from_db()
        assert (job.status, job.cancel_requested) == (Status.RUNNING, True)
        assert "Cancel requested by admin:boss" in job.log


class TestProgressJson:
    def test_admins_get_the_progress_as_it_arrives(self, admin_api_client):
        job = queued_job()
        TrainingJob.objects.filter(pk=job.pk).update(
            status=Status.RUNNING, progress=[{"epoch": 1, "loss": 2.0, "val_recall@50": 0.1}],
            data_counts={"users": 30})

        body = admin_api_client.get(reverse("ops:job-progress", args=[job.pk])).json()

        assert body["status"] == "running" and body["finished"] is False
        assert body["progress"] == [{"epoch": 1, "loss": 2.0, "val_recall@50": 0.1}]
        assert body["data_counts"] == {"users": 30}
        assert set(body) >= {"log", "error", "metrics", "duration_seconds", "model_version"}

    def test_product_managers_and_client_apps_are_refused(self, pm_client, client_app,
                                                          anonymous):
        url = reverse("ops:job-progress", args=[queued_job().pk])

        assert pm_client.get(url).status_code == 403
        assert client_app.get(url).status_code in (401, 403)
        assert anonymous.get(url).status_code in (401, 403)

    def test_an_unknown_job_is_404(self, admin_api_client):
        assert admin_api_client.get(reverse("ops:job-progress", args=[999])).status_code == 404


RECOMMENDER_METRICS = {"hr@10": 0.41, "ndcg@10": 0.2345, "recall@50": 0.77, "coverage": 0.5}
POPULARITY = {"popularity": {"hr@10": 0.11, "ndcg@10": 0.0567, "recall@50": 0.3,
                             "coverage": 0.02}}


class TestModelVersions:
    def test_versions_side_by_side_with_the_baseline_and_the_active_one(self, staff,
                                                                       model_store):
        make_version(name="rec-active", status="active", activated_minutes_ago=5,
                     metrics=RECOMMENDER_METRICS, baseline_metrics=POPULARITY)
        make_version(name="rec-candidate", metrics={**RECOMMENDER_METRICS, "ndcg@10": 0.25})
        make_version(kind="sentiment", name="sent-1",
                     metrics={"accuracy": 0.9, "macro_f1": 0.88, "roc_auc": 0.95},
                     baseline_metrics={"vader": {"accuracy": 0.7, "macro_f1": 0.65,
                                                 "roc_auc": 0.8}})

        html = staff.get(reverse("ops:models")).content.decode()

        for text in ("rec-active", "rec-candidate", "sent-1", "0.2345", "0.0567", "0.2500",
                     "macro_f1", "0.8800", "0.6500", "recall@50", "coverage", "roc_auc"):
            assert text in html
        assert 'class="ops-active"' in html
        assert reverse("ops:promote", args=[ModelVersion.objects.get(name="rec-candidate").pk]) \
            in html

    def test_promote_asks_for_confirmation_then_promotes_and_audits(self, staff, model_store):
        make_version(name="rec-active", status="active", activated_minutes_ago=5)
        candidate = make_version(name="rec-candidate")
        url = reverse("ops:promote", args=[candidate.pk])

        confirm = staff.get(url)
        assert confirm.status_code == 200
        assert "instead of rec-active" in confirm.content.decode()
        candidate.refresh_from_db()
        assert candidate.status == "candidate"

        response = staff.post(url, follow=True)

        candidate.refresh_from_db()
        assert candidate.status == "active"
        assert page_messages(response) == ["rec-candidate is now the active recommender model."]
        entry = ModelAuditEntry.objects.get(version=candidate, action="promote")
        assert entry.actor == "admin:boss"
        assert "admin:boss" in response.content.decode()

    def test_roll_back_asks_for_confirmation_then_restores_the_previous(self, staff,
                                                                       model_store):
        previous = make_version(name="rec-old", status="retired", activated_minutes_ago=60)
        current = make_version(name="rec-new", status="active", activated_minutes_ago=5)
        url = reverse("ops:rollback", args=["recommender"])

        assert "rec-old" in staff.get(url).content.decode()
        staff.post(url)

        previous.refresh_from_db()
        current.refresh_from_db()
        assert (previous.status, current.status) == ("active", "retired")
        assert ModelAuditEntry.objects.get(action="rollback").actor == "admin:boss"

    def test_a_refused_promotion_says_why(self, staff, model_store):
        broken = make_version(name="rec-broken", corrupt=True)

        response = staff.post(reverse("ops:promote", args=[broken.pk]), follow=True)

        (message,) = page_messages(response)
        assert "rec-broken cannot serve" in message
        broken.refresh_from_db()
        assert broken.status == "candidate"

    def test_an_ab_split_sends_a_share_of_users_to_a_candidate(self, staff, model_store):
        make_version(name="rec-active", status="active", activated_minutes_ago=5)
        candidate = make_version(name="rec-candidate")

        response = staff.post(reverse("ops:split", args=[candidate.pk]), {"percent": "25"},
                              follow=True)

        candidate.refresh_from_db()
        assert candidate.traffic_percent == 25
        assert page_messages(response) == ["rec-candidate now serves 25% of users."]
        assert ModelAuditEntry.objects.get(action="traffic-split").actor == "admin:boss"

    def test_sentiment_candidates_offer_promotion_but_no_split(self, staff, model_store):
        make_version(name="rec-candidate")
        make_version(kind="sentiment", name="sent-candidate")

        content = staff.get(reverse("ops:models")).content.decode()

        assert content.count("Set split") == 1
        assert content.count(">Promote</a>") == 2

    @pytest.mark.parametrize("percent", ["", "ten", "150"])
    def test_an_invalid_split_is_refused_with_a_message(self, staff, model_store, percent):
        candidate = make_version(name="rec-candidate")

        response = staff.post(reverse("ops:split", args=[candidate.pk]), {"percent": percent},
                              follow=True)

        assert len(page_messages(response)) == 1
        candidate.refresh_from_db()
        assert candidate.traffic_percent == 0


@pytest.mark.parametrize("codenames, offered", [
    (["view_modelversion"], False), (["view_modelversion", "change_modelversion"], True)])
def test_promotion_in_the_admin_takes_the_change_permission(client, codenames, offered):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)

    response = client.get(reverse("admin:recommender_modelversion_changelist"))

    form = response.context["action_form"]  # None where no action is offered at all
    actions = [name for name, _ in form.fields["action"].choices] if form else []
    assert ("promote" in actions) is offered


@pytest.mark.parametrize("name, args", [
    ("ops:train", []), ("ops:cancel", ["job"]), ("ops:promote", ["version"]),
    ("ops:rollback", ["recommender"]), ("ops:split", ["version"])])
def test_a_view_only_staff_account_changes_nothing_from_the_ops_pages(client, name, args):
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission

    user = get_user_model().objects.create_user("viewer", password="pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_modelversion", "view_trainingjob"]))
    client.force_login(user)
    job = queued_job()
    version = ModelVersion.objects.create(kind="recommender", name="rec-candidate",
                                          artifact_path="a", checksum="c")
    ids = {"job": job.pk, "version": version.pk}

    response = client.post(reverse(name, args=[ids.get(arg, arg) for arg in args]),
                           {"kind": "recommender", "percent": 10})

    assert response.status_code == 403
    job.refresh_from_db()
    version.refresh_from_db()
    assert (job.status, version.status, version.traffic_percent) == ("queued", "candidate", 0)
    assert TrainingJob.objects.count() == 1
    assert client.get(reverse("ops:jobs")).status_code == 200  # it may still look


def test_a_version_serving_users_cannot_be_deleted_in_the_admin(admin_client, model_store):
    active = make_version(name="rec-active", status=ModelVersion.Status.ACTIVE)
    split = make_version(name="rec-split")
    ModelVersion.objects.filter(pk=split.pk).update(traffic_percent=10)
    retired = make_version(name="rec-old", status=ModelVersion.Status.RETIRED)

    def delete(version):
        return admin_client.post(reverse("admin:recommender_modelversion_delete",
                                         args=[version.pk]), {"post": "yes"})

    assert delete(active).status_code == 403
    assert delete(split).status_code == 403
    delete(retired)

    assert set(ModelVersion.objects.values_list("name", flat=True)) == {"rec-active",
                                                                        "rec-split"}
    changelist = admin_client.get(reverse("admin:recommender_modelversion_changelist"))
    assert "delete_selected" not in dict(changelist.context["action_form"].fields["action"]
                                         .choices)


def test_a_queued_or_running_job_cannot_be_deleted_in_the_admin(admin_client):
    queued = queued_job()
    running = queued_job(kind="sentiment")
    TrainingJob.objects.filter(pk=running.pk).update(status=TrainingJob.Status.RUNNING)
    finished = TrainingJob.objects.create(kind="recommender", status=TrainingJob.Status.FAILED)

    def delete(job):
        return admin_client.post(reverse("admin:recommender_trainingjob_delete",
                                         args=[job.pk]), {"post": "yes"})

    assert delete(queued).status_code == 403
    assert delete(running).status_code == 403
    delete(finished)

    assert set(TrainingJob.objects.values_list("pk", flat=True)) == {queued.pk, running.pk}
