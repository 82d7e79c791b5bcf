import pytest

from portal.audit.models import AuditEvent
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db


def test_the_admin_action_retries_through_the_service_and_is_audited(client, ada_admin):
    job = Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD)
    client.force_login(ada_admin)
    response = client.post(
        "/admin/jobs/job/", {"action": "retry_selected", "_selected_action": [job.pk]}, follow=True
    )
    assert response.status_code == 200
    assert b"1 job queued again" in response.content
    assert Job.objects.get(pk=job.pk).status == Job.Status.PENDING
    assert AuditEvent.objects.get(action="job.retry").actor_name == "ada-admin"


def test_jobs_cannot_be_edited_or_deleted_in_the_admin(client, ada_admin):
    job = Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD)
    client.force_login(ada_admin)
    assert client.get(f"/admin/jobs/job/{job.pk}/change/").status_code == 200  # view only
    assert client.post(f"/admin/jobs/job/{job.pk}/delete/", {"post": "yes"}).status_code == 403
    assert Job.objects.filter(pk=job.pk).exists()
