import pytest
from django.urls import reverse

from integrations.microsoft import inbox
from portal.audit.models import AuditEvent
from portal.console.jobs_views import TYPED_CONFIRMATION_THRESHOLD
from portal.jobs.models import BulkOperation, Job, JobAttempt, PausedJobType
from portal.jobs.runner import enqueue, run_job

pytestmark = pytest.mark.django_db


def dead(n=1, **fields):
    return [
        Job.objects.create(
            job_type=fields.get("job_type", "jobs.noop"),
            status=Job.Status.DEAD,
            last_error="GraphError: 503 at 1234",
            error_signature=fields.get("sig", "aaaa"),
            payload=fields.get("payload", {"user": "ann@fleet"}),
        )
        for _ in range(n)
    ]


class TestList:
    def test_dead_jobs_with_tabs_counts_and_failure_groups(self, client, vera_viewer):
        dead(3, sig="aaaa")
        dead(1, sig="bbbb", job_type="other")
        client.force_login(vera_viewer)
        response = client.get(reverse("console:jobs"))
        assert response.status_code == 200
        assert len(response.context["jobs"]) == 4
        assert dict((t, c) for t, c, _ in response.context["tabs"])["dead"] == 4
        groups = {g["error_signature"]: g["count"] for g in response.context["groups"]}
        assert groups == {"aaaa": 3, "bbbb": 1}
        assert b"Retry all matching" not in response.content  # viewers get no buttons

    def test_filters_by_type_signature_and_payload_search(self, client, vera_viewer):
        dead(2, sig="aaaa")
        target = dead(1, sig="bbbb", payload={"user": "zed@fleet"})[0]
        client.force_login(vera_viewer)
        url = reverse("console:jobs")
        assert [j.pk for j in client.get(url + "?signature=bbbb").context["jobs"]] == [target.pk]
        assert [j.pk for j in client.get(url + "?q=zed@").context["jobs"]] == [target.pk]
        assert client.get(url + "?job_type=nope").context["jobs"] == []

    def test_bad_filters_are_explained(self, client, vera_viewer):
        client.force_login(vera_viewer)
        response = client.get(reverse("console:jobs") + "?status=exploded&before=x")
        assert response.status_code == 200
        assert b"Select a valid choice" in response.content

    def test_htmx_gets_the_table_partial(self, client, vera_viewer):
        client.force_login(vera_viewer)
        body = client.get(reverse("console:jobs"), headers={"HX-Request": "true"}).content
        assert body.decode().lstrip().startswith('<div id="job-table">')


class TestDetailAndActions:
    def test_detail_masks_secrets_and_lists_attempts(self, client, otto_operator):
        job = dead(payload={"user": "ann", "client_secret": "hunter2"})[0]
        JobAttempt.objects.create(
            job=job,
            number=1,
            started_at=job.created_at,
            outcome="failed",
            error="boom",
            traceback="Traceback: x",
        )
        client.force_login(otto_operator)
        response = client.get(reverse("console:job_detail", args=[job.pk]))
        assert response.status_code == 200
        assert b"hunter2" not in response.content
        assert b"Traceback: x" in response.content

    def test_support_retries_from_the_console(self, client, sam_support):
        job = dead()[0]
        client.force_login(sam_support)
        response = client.post(
            reverse("console:job_retry", args=[job.pk]), {"next": reverse("console:jobs")}
        )
        assert response.status_code == 302 and response["Location"] == reverse("console:jobs")
        job.refresh_from_db()
        assert job.status == Job.Status.PENDING
        assert AuditEvent.objects.get(action="job.retry").actor_name == "sam-support"

    def test_the_next_parameter_never_leaves_the_portal(self, client, sam_support):
        job = dead()[0]
        client.force_login(sam_support)
        response = client.post(
            reverse("console:job_retry", args=[job.pk]), {"next": "//evil.example/"}
        )
        assert response["Location"] == reverse("console:job_detail", args=[job.pk])

    def test_viewers_cannot_retry_or_discard(self, client, vera_viewer):
        job = dead()[0]
        client.force_login(vera_viewer)
        assert client.post(reverse("console:job_retry", args=[job.pk])).status_code == 403
        assert (
            client.post(reverse("console:job_discard", args=[job.pk]), {"reason": "x"}).status_code
            == 403
        )
        assert Job.objects.get(pk=job.pk).status == Job.Status.DEAD

    def test_discard_without_a_reason_explains(self, client, otto_operator):
        job = dead()[0]
        client.force_login(otto_operator)
        response = client.post(
            reverse("console:job_discard", args=[job.pk]), {"reason": ""}, follow=True
        )
        assert b"Say why" in response.content
        assert Job.objects.get(pk=job.pk).status == Job.Status.DEAD

    def test_unknown_jobs_are_404(self, client, vera_viewer):
        client.force_login(vera_viewer)
        assert client.get(reverse("console:job_detail", args=[424242])).status_code == 404


class TestRetryAll:
    def test_the_preview_shows_the_count_and_a_sample(self, client, otto_operator):
        dead(7)
        client.force_login(otto_operator)
        response = client.get(reverse("console:jobs_retry_all") + "?status=dead")
        assert response.context["preview"].count == 7
        assert len(response.context["preview"].sample) == 5
        assert not response.context["needs_typing"]

    def test_confirming_starts_a_bulk_operation_and_shows_progress(self, client, otto_operator):
        dead(3)
        client.force_login(otto_operator)
        response = client.post(reverse("console:jobs_retry_all"), {"status": "dead"})
        operation = BulkOperation.objects.get()
        assert response["Location"] == reverse("console:bulk_operation", args=[operation.pk])
        page = client.get(response["Location"])
        assert b"0 of 3 processed" in page.content
        partial = client.get(response["Location"], headers={"HX-Request": "true"})
        assert partial.content.decode().lstrip().startswith('<section id="progress"')

    def test_above_the_threshold_the_count_must_be_typed(self, client, otto_operator):
        dead(TYPED_CONFIRMATION_THRESHOLD + 1)
        client.force_login(otto_operator)
        url = reverse("console:jobs_retry_all")
        refused = client.post(url, {"status": "dead", "confirm_count": "1"})
        assert refused.status_code == 400 and not BulkOperation.objects.exists()
        accepted = client.post(
            url, {"status": "dead", "confirm_count": str(TYPED_CONFIRMATION_THRESHOLD + 1)}
        )
        assert accepted.status_code == 302 and BulkOperation.objects.count() == 1

    def test_support_cannot_retry_all(self, client, sam_support):
        dead(2)
        client.force_login(sam_support)
        assert client.get(reverse("console:jobs_retry_all")).status_code == 403
        assert client.post(reverse("console:jobs_retry_all"), {}).status_code == 403


class TestPause:
    def test_an_operator_pauses_and_resumes_a_type(self, client, otto_operator):
        client.force_login(otto_operator)
        url = reverse("console:job_type_pause")
        client.post(url, {"job_type": "jobs.noop", "action": "pause", "reason": "429 storm"})
        assert PausedJobType.objects.get().reason == "429 storm"
        job = enqueue("jobs.noop")
        assert run_job(job.pk) == "paused"  # the worker that picks it up parks it
        response = client.post(url, {"job_type": "jobs.noop", "action": "resume"}, follow=True)
        assert b"1 waiting jobs released" in response.content
        assert not PausedJobType.objects.exists()

    def test_an_operator_pauses_and_resumes_notification_processing(self, client, otto_operator):
        client.force_login(otto_operator)
        url = reverse("console:inbox_drain_pause")
        response = client.post(url, {"action": "pause", "reason": "storm"}, follow=True)
        assert b"Notification processing paused" in response.content
        assert inbox.paused() and inbox.pause_state().reason == "storm"
        row = response.content.decode().split('id="notification-drain"')[1].split("</tr>")[0]
        assert "paused" in row and "storm" in row and 'value="resume"' in row
        assert not PausedJobType.objects.exists()  # the drain is not a job type
        client.post(url, {"action": "resume"})
        assert not inbox.paused()
        actions = AuditEvent.objects.filter(target_type="inbox_drain").order_by("id")
        assert [a.action for a in actions] == ["inbox.pause", "inbox.resume"]
        # The audit log names what was paused and links to the switch.
        log = client.get(reverse("console:audit")).content.decode()
        assert "notification processing (the inbox drain)" in log

    def test_support_cannot_pause_notification_processing(self, client, sam_support):
        client.force_login(sam_support)
        response = client.post(reverse("console:inbox_drain_pause"), {"action": "pause"})
        assert response.status_code == 403 and not inbox.paused()

    def test_support_cannot_pause(self, client, sam_support):
        client.force_login(sam_support)
        response = client.post(
            reverse("console:job_type_pause"), {"job_type": "jobs.noop", "action": "pause"}
        )
        assert response.status_code == 403 and not PausedJobType.objects.exists()


def test_a_jobs_payload_and_result_are_labelled_fields(client, vera_viewer):
    job = Job.objects.create(
        job_type="graph.sync_delta",
        payload={"monitored_user_id": 5, "kind": "messages", "full": False},
        result={"rows_deleted": 11, "pages": [1, 2]},
        status="succeeded",
    )
    client.force_login(vera_viewer)
    body = client.get(f"/jobs/{job.pk}/").content.decode()
    assert "Delta sync" in body  # the job type's label
    assert (
        '<dt>Monitored user id <small class="muted machine-name">monitored_user_id</small>' in body
    )
    assert "<dd>no</dd>" in body  # False, in words
    assert (
        '<dt>Rows deleted <small class="muted machine-name">rows_deleted</small></dt><dd>11</dd>'
        in body
    )
    assert "{&#x27;" not in body and "{'" not in body  # no Python dict on screen


def test_an_empty_payload_reads_nothing(client, vera_viewer):
    job = Job.objects.create(job_type="jobs.noop", payload={}, result={"skipped": None})
    client.force_login(vera_viewer)
    body = client.get(f"/jobs/{job.pk}/").content.decode()
    assert '<p class="muted">Nothing.</p>' in body and '<span class="muted">—</span>' in body
