import pytest
from django.core.exceptions import PermissionDenied

from portal.access.actors import Actor, role_of
from portal.audit.models import AuditEvent
from portal.jobs import bulk, services
from portal.jobs.models import BulkOperation, BulkOperationItem, Job, JobAttempt
from portal.jobs.runner import enqueue, run_job
from portal.jobs.services import JobActionError, JobFilter
from tests.portal.jobs.conftest import queued_job_ids

pytestmark = pytest.mark.django_db


def actor_for(user):
    return Actor(kind="user", name=user.username, role=role_of(user), user=user)


def dead_job(drain, job_type="test.permanent", **payload):
    """A job that died on its only attempt (test.flaky with fail_times=1 then succeeds)."""
    job = enqueue(job_type, payload, max_attempts=1)
    drain()
    job.refresh_from_db()
    assert job.status == Job.Status.DEAD
    return job


class TestRetryOne:
    def test_support_retries_a_dead_job_and_its_history_is_kept(self, drain, sam_support):
        job = dead_job(drain, "test.flaky", fail_times=1)
        retried = services.retry_job(actor_for(sam_support), job.pk)
        assert retried.status == Job.Status.PENDING and retried.attempts == 0
        assert drain() == ["succeeded"]
        job.refresh_from_db()
        assert job.runs == 2
        assert list(JobAttempt.objects.filter(job=job).values_list("number", "outcome")) == [
            (1, "failed"),
            (2, "succeeded"),
        ]
        event = AuditEvent.objects.get(action="job.retry")
        assert (event.actor_name, event.target_id, event.params["before"]) == (
            "sam-support",
            str(job.pk),
            "dead",
        )

    def test_a_viewer_is_refused_and_the_attempt_audited(self, drain, vera_viewer):
        job = dead_job(drain)
        with pytest.raises(PermissionDenied):
            services.retry_job(actor_for(vera_viewer), job.pk)
        job.refresh_from_db()
        assert job.status == Job.Status.DEAD
        assert AuditEvent.objects.get(action="job.retry").outcome == "denied"

    def test_only_retryable_states_and_existing_jobs(self, drain, sam_support):
        job = enqueue("test.ok")
        drain()
        with pytest.raises(JobActionError, match="succeeded"):
            services.retry_job(actor_for(sam_support), job.pk)
        with pytest.raises(JobActionError, match="no job #999"):
            services.retry_job(actor_for(sam_support), 999)
        with pytest.raises(JobActionError, match="no job"):
            services.retry_job(actor_for(sam_support), "x'; drop table")


class TestDiscard:
    def test_it_needs_a_reason_and_the_operator_role(self, drain, sam_support, otto_operator):
        job = dead_job(drain)
        with pytest.raises(PermissionDenied):
            services.discard_job(actor_for(sam_support), job.pk, "noise")
        with pytest.raises(JobActionError, match="Say why"):
            services.discard_job(actor_for(otto_operator), job.pk, "  ")
        discarded = services.discard_job(actor_for(otto_operator), job.pk, "mailbox deleted")
        assert discarded.status == Job.Status.CANCELLED
        event = AuditEvent.objects.get(action="job.discard", outcome="success")
        assert event.reason == "mailbox deleted"


class TestPause:
    def test_paused_work_waits_and_resumes_without_loss(self, drain, otto_operator):
        actor = actor_for(otto_operator)
        services.pause_job_type(actor, "test.ok", reason="Graph throttling us")
        jobs = [enqueue("test.ok", {"value": i}) for i in range(3)]
        assert drain() == ["paused"] * 3  # workers park them
        assert queued_job_ids() == []
        assert services.resume_job_type(actor, "test.ok") == 3
        assert drain() == ["succeeded"] * 3
        assert all(Job.objects.get(pk=j.pk).status == Job.Status.SUCCEEDED for j in jobs)
        actions = list(
            AuditEvent.objects.filter(action__startswith="jobs.")
            .order_by("id")
            .values_list("action", flat=True)
        )
        assert actions == ["jobs.pause", "jobs.resume"]

    def test_a_job_dispatched_before_the_pause_waits_too(self, drain, otto_operator):
        job = enqueue("test.ok")
        services.pause_job_type(actor_for(otto_operator), "test.ok")
        assert drain() == ["paused"]
        job.refresh_from_db()
        assert job.status == Job.Status.PENDING and job.dispatched_at is None
        services.resume_job_type(actor_for(otto_operator), "test.ok")
        assert drain() == ["succeeded"]

    def test_support_may_not_pause(self, sam_support):
        with pytest.raises(PermissionDenied):
            services.pause_job_type(actor_for(sam_support), "test.ok")


class TestRetryAll:
    def test_preview_then_retry_a_frozen_set_in_the_background(self, drain, otto_operator):
        for _ in range(3):
            dead_job(drain, "test.flaky", fail_times=1)
        other = dead_job(drain, "test.permanent")
        preview = services.preview_retry_all(
            JobFilter(job_type="test.flaky"), actor=actor_for(otto_operator)
        )
        assert preview.count == 3 and len(preview.sample) == 3
        operation = services.start_retry_all(
            actor_for(otto_operator), JobFilter(job_type="test.flaky")
        )
        assert operation.total == 3 and operation.status == BulkOperation.Status.PENDING
        # A job that dies after the ids were frozen is not part of this operation.
        late = Job.objects.create(job_type="test.flaky", status=Job.Status.DEAD)
        drain()  # runs the bulk job, which re-dispatches the three
        operation.refresh_from_db()
        assert (operation.status, operation.processed, operation.succeeded) == ("done", 3, 3)
        assert drain() == ["succeeded"] * 3
        assert Job.objects.get(pk=other.pk).status == Job.Status.DEAD
        assert Job.objects.get(pk=late.pk).status == Job.Status.DEAD
        event = AuditEvent.objects.get(action="job.retry_all")
        assert event.params == {
            "filters": {"status": "dead", "job_type": "test.flaky"},
            "count": 3,
            "skipped_not_permitted": 0,
        }

    def test_items_whose_state_changed_are_skipped(self, drain, otto_operator, sam_support):
        jobs = [dead_job(drain) for _ in range(2)]
        operation = services.start_retry_all(actor_for(otto_operator), JobFilter())
        services.retry_job(actor_for(sam_support), jobs[0].pk)  # someone was faster
        run_bulk = Job.objects.get(job_type="jobs.bulk")

        run_job(run_bulk.pk)
        operation.refresh_from_db()
        assert (operation.succeeded, operation.skipped) == (1, 1)
        assert BulkOperationItem.objects.filter(operation=operation, result="skipped").count() == 1

    def test_it_can_be_cancelled(self, drain, otto_operator):
        dead_job(drain)
        operation = services.start_retry_all(actor_for(otto_operator), JobFilter())
        bulk.cancel(actor_for(otto_operator), operation.pk)
        drain()
        operation.refresh_from_db()
        assert operation.status == "cancelled" and operation.processed == 0
        with pytest.raises(bulk.BulkError, match="not running"):
            bulk.cancel(actor_for(otto_operator), operation.pk)

    def test_support_may_not_retry_all(self, sam_support):
        with pytest.raises(PermissionDenied):
            services.start_retry_all(actor_for(sam_support), JobFilter())
        assert not BulkOperation.objects.exists()
