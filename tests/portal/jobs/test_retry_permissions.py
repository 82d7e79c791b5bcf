"""Retrying a job needs the permission of the work it runs, and the re-run
is attributed to the person who retried it.

The first cases are the hole as it was found: `support` (which may not clean up
subscriptions) retried a cancelled `graph.subscriptions_run` cleanup through the console and
the API, and the run was audited in the name of the operator who first started it.
"""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

import tests.portal.jobs.handlers  # noqa: F401  (registers test.admin_work)
from integrations.microsoft import subscriptions
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.access.roles import PERMISSIONS
from portal.audit.models import AuditEvent
from portal.jobs import bulk, services
from portal.jobs.models import BulkOperation, Job
from portal.jobs.registry import job_types, retry_permission
from tests.conftest import PERSONAS, run_queued_jobs

pytestmark = pytest.mark.django_db


def cancelled_cleanup(started_by: str = "otto-operator") -> Job:
    return Job.objects.create(
        job_type="graph.subscriptions_run",
        status=Job.Status.CANCELLED,
        payload={"action": "cleanup", "started_by": started_by},
        created_by=started_by,
        max_attempts=1,
    )


def test_reproduction_support_cannot_retry_a_cleanup_from_the_console(client, personas):
    job = cancelled_cleanup()
    client.force_login(personas["support"])
    response = client.post(f"/jobs/{job.pk}/retry")
    assert response.status_code in (302, 403)
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED
    denial = AuditEvent.objects.get(action="job.retry", outcome="denied")
    assert "cleanup_subscriptions" in denial.reason


def test_reproduction_support_cannot_retry_a_cleanup_through_the_api(client, personas):
    job = cancelled_cleanup()
    raw = create_token(Actor.system("tests"), PERSONAS["support"], "support")[1]
    response = client.post(f"/api/queue/retry/{job.pk}", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == Job.Status.CANCELLED


def test_every_job_type_and_bulk_kind_declares_a_known_retry_permission():
    for job_type in job_types():
        permission = job_type.retry_permission
        if not callable(permission):
            assert permission in PERMISSIONS, job_type.name
    for kind in bulk.KINDS.values():
        assert kind.permission in PERMISSIONS, kind.name
    setup = Job(job_type="graph.subscriptions_run", payload={"action": "setup"})
    assert retry_permission(setup) == "setup_subscriptions"
    cleanup = Job(job_type="graph.subscriptions_run", payload={"action": "cleanup"})
    assert retry_permission(cleanup) == "cleanup_subscriptions"


def test_the_gateways_job_types_need_the_permission_of_their_work():
    declared = {t.name: t.retry_permission for t in job_types()}
    assert declared["graph.send_mail"] == declared["graph.send_teams"] == "send_messages"
    assert declared["events.deliver"] == "manage_event_endpoints"  # a re-run is a replay
    assert declared["events.fan_out"] == "retry_job"


def test_support_cannot_resend_a_dead_message_job(personas):
    job = Job.objects.create(
        job_type="graph.send_mail", status=Job.Status.DEAD, payload={"message": 1}
    )
    support = Actor(kind="user", name=PERSONAS["support"], role="support", user=personas["support"])
    with pytest.raises(PermissionDenied):
        services.retry_job(support, job.pk)
    assert Job.objects.get(pk=job.pk).status == Job.Status.DEAD
    denial = AuditEvent.objects.get(action="job.retry", outcome="denied")
    assert "send_messages" in denial.reason


def test_the_rerun_is_attributed_to_the_person_who_retried(client, personas, stub):
    seen = []

    class Summary:
        failed: list = []

        def counts(self):
            return {}

        def lines(self):
            return []

    def fake_cleanup(actor):  # the Graph side is tested elsewhere; here: who runs it
        seen.append(actor.name)
        return Summary()

    stub(subscriptions, "cleanup", side_effect=fake_cleanup)
    job = cancelled_cleanup(started_by="someone-else")
    client.force_login(personas["operator"])
    assert client.post(f"/jobs/{job.pk}/retry").status_code == 302
    retry = AuditEvent.objects.get(action="job.retry", outcome="success")
    assert retry.actor_name == PERSONAS["operator"]
    run_queued_jobs()
    assert seen and PERSONAS["operator"] in seen[0] and "someone-else" not in seen[0]
    job.refresh_from_db()
    assert job.retried_by == PERSONAS["operator"]


def test_retry_all_skips_and_counts_what_the_caller_may_not_retry(personas):
    cleanup = cancelled_cleanup()
    noop = Job.objects.create(job_type="jobs.noop", status=Job.Status.CANCELLED)
    operator = Actor(
        kind="user", name=PERSONAS["operator"], role="operator", user=personas["operator"]
    )
    job_filter = services.JobFilter(status=Job.Status.CANCELLED)
    sub_job = Job.objects.create(
        job_type="jobs.bulk",
        status=Job.Status.CANCELLED,
        payload={"operation_id": BulkOperation.objects.create(kind="retry", created_by="x").pk},
    )
    preview = services.preview_retry_all(job_filter, actor=operator)
    assert preview.count == 3 and preview.refused == 0
    support = Actor(kind="user", name=PERSONAS["support"], role="support", user=personas["support"])
    preview = services.preview_retry_all(job_filter, actor=support)
    assert (preview.count, preview.refused) == (3, 2)
    operation = services.start_retry_all(operator, job_filter)
    assert operation.total == 3
    run_queued_jobs()
    assert Job.objects.get(pk=noop.pk).retried_by == PERSONAS["operator"]
    assert Job.objects.get(pk=cleanup.pk).status == Job.Status.PENDING
    assert Job.objects.get(pk=sub_job.pk).status != Job.Status.CANCELLED


def test_retry_all_preview_page_says_what_is_skipped(client, personas):
    Job.objects.create(job_type="test.admin_work", status=Job.Status.CANCELLED)
    noop = Job.objects.create(job_type="jobs.noop", status=Job.Status.CANCELLED)
    client.force_login(personas["operator"])
    page = client.get("/jobs/retry-all?status=cancelled").content.decode()
    assert "<strong>2</strong>" in page
    assert "<strong>1</strong> of them will be skipped" in page
    response = client.post("/jobs/retry-all", {"status": "cancelled"})
    assert response.status_code == 302
    operation = BulkOperation.objects.get(kind="retry")
    assert operation.total == 1
    started = AuditEvent.objects.get(action="job.retry_all", outcome="success")
    assert started.params["skipped_not_permitted"] == 1
    run_queued_jobs()
    assert Job.objects.get(pk=noop.pk).status != Job.Status.CANCELLED
    assert Job.objects.get(job_type="test.admin_work").status == Job.Status.CANCELLED


def test_the_api_retry_all_reports_what_it_skipped(client, personas):
    Job.objects.create(job_type="test.admin_work", status=Job.Status.DEAD)
    Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD)
    raw = create_token(Actor.system("tests"), PERSONAS["operator"], "operator")[1]
    response = client.post(
        "/api/queue/retry-all",
        {},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
    )
    assert response.status_code == 202
    assert (response.json()["count"], response.json()["skippedNotPermitted"]) == (1, 1)


def test_group_retry_by_signature_checks_every_job(client, personas):
    cancelled = cancelled_cleanup()
    Job.objects.filter(pk=cancelled.pk).update(status=Job.Status.DEAD, error_signature="abc")
    Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD, error_signature="abc")
    support = Actor(kind="user", name=PERSONAS["support"], role="support", user=personas["support"])
    preview = services.preview_retry_all(services.JobFilter(error_signature="abc"), actor=support)
    assert (preview.count, preview.refused) == (2, 1)
