"""An operator backs off one mailbox: every Graph request for it waits until the end time
(jobs are rescheduled to it, retries already scheduled included); the others go on."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from integrations import graph
from integrations.graph.errors import Throttled
from integrations.microsoft import backoff, sync
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.jobs.models import Job
from portal.jobs.runner import release_due_jobs
from tests.conftest import run_queued_jobs

pytestmark = pytest.mark.django_db


@pytest.fixture
def otto(otto_operator) -> Actor:
    return Actor(kind="user", name=otto_operator.username, role="operator", user=otto_operator)


def test_one_mailbox_waits_and_the_others_go_on(otto, graph_settings, emulator, monitored):
    others = [u for u in emulator.control.tenant()["users"] if u["id"] != monitored.graph_id]
    done = backoff.back_off_mailbox(otto, monitored.upn, 30, "429 storm on this mailbox")
    assert done.key == monitored.graph_id.lower()
    assert done.until == pytest.approx(
        timezone.now() + timedelta(minutes=30), abs=timedelta(seconds=5)
    )
    before = len(emulator.control.requests_log(path=monitored.graph_id))
    with pytest.raises(Throttled) as caught:
        graph.get(f"/users/{monitored.graph_id}/messages", params={"$top": "1"})
    assert caught.value.code == "LocalThrottle"
    assert caught.value.retry_after == pytest.approx(30 * 60, abs=10)
    with pytest.raises(Throttled):  # by address too: the same mailbox to Graph
        graph.get(f"/users/{monitored.upn}/messages", params={"$top": "1"})
    assert len(emulator.control.requests_log(path=monitored.graph_id)) == before  # nothing sent
    assert graph.get(f"/users/{others[0]['id']}/messages", params={"$top": "1"}) is not None

    event = AuditEvent.objects.get(action="graph.mailbox_backoff")
    assert (event.actor_name, event.reason, event.target_id) == (
        otto.name,
        "429 storm on this mailbox",
        monitored.graph_id.lower(),
    )
    assert event.params["minutes"] == 30
    assert [b.mailbox for b in backoff.active_backoffs()] == [monitored.upn]


def test_jobs_for_the_mailbox_are_rescheduled_to_its_end_retries_included(
    otto, graph_settings, emulator, monitored
):
    backoff.back_off_mailbox(otto, monitored.upn, 20, "storm")
    sync.request_delta(monitored.pk, "messages", trigger="test")
    run_queued_jobs()
    (job,) = Job.objects.filter(job_type=sync.JOB_TYPE)
    assert job.status == Job.Status.RETRYING
    # A retry already scheduled comes due before the end: it is sent back to the end.
    Job.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())
    release_due_jobs()
    run_queued_jobs()
    assert Job.objects.get(pk=job.pk).attempts == 2
    for waiting in Job.objects.filter(job_type=sync.JOB_TYPE):
        assert waiting.status == Job.Status.RETRYING, waiting.last_error
        assert "LocalThrottle" in waiting.last_error or "throttled" in waiting.last_error
        assert waiting.next_attempt_at >= timezone.now() + timedelta(minutes=19)


@pytest.mark.parametrize("minutes", [0, -5, 24 * 60 + 1])
def test_zero_or_more_than_a_day_is_refused(minutes, otto, graph_settings):
    with pytest.raises(backoff.BackoffError, match="between 1 minute and 1440"):
        backoff.back_off_mailbox(otto, "someone@contoso.test", minutes, "why")
    assert not AuditEvent.objects.filter(action="graph.mailbox_backoff").exists()


def test_a_reason_and_a_mailbox_are_needed(otto, graph_settings):
    with pytest.raises(backoff.BackoffError, match="why"):
        backoff.back_off_mailbox(otto, "someone@contoso.test", 5, " ")
    with pytest.raises(backoff.BackoffError, match="Name the mailbox"):
        backoff.back_off_mailbox(otto, "", 5, "storm")


def test_support_may_not_back_off(graph_settings, sam_support):
    sam = Actor(kind="user", name=sam_support.username, role="support", user=sam_support)
    with pytest.raises(PermissionDenied):
        backoff.back_off_mailbox(sam, "someone@contoso.test", 5, "x")
    denied = AuditEvent.objects.get(action="graph.mailbox_backoff")
    assert denied.outcome == "denied"
