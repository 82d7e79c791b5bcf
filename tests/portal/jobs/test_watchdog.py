import socket
import subprocess
from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from portal.jobs.models import Job, JobAttempt
from portal.jobs.runner import _claim, enqueue, worker_identity
from portal.jobs.watchdog import requeue_lost_jobs

pytestmark = pytest.mark.django_db


def start_without_finishing(job, worker):
    """What a worker that dies mid-run leaves behind: a claimed, running job."""
    return _claim(job.pk, worker)


def test_a_run_past_its_lease_is_counted_as_a_lost_attempt_and_retried():
    job = enqueue("test.ok")
    start_without_finishing(job, "other-host:123")
    assert requeue_lost_jobs() == 0  # another host, lease still valid: it may be running
    with time_machine.travel(timezone.now() + timedelta(minutes=10)):
        assert requeue_lost_jobs() == 1
    job.refresh_from_db()
    assert job.status == Job.Status.RETRYING and job.attempts == 1
    attempt = JobAttempt.objects.get(job=job)
    assert attempt.outcome == JobAttempt.Outcome.LOST
    assert "timed out" in attempt.error


def test_a_dead_worker_process_on_this_host_is_noticed_at_once():
    gone = subprocess.Popen(["true"])
    gone.wait()
    job = enqueue("test.ok")
    start_without_finishing(job, f"{socket.gethostname()}:{gone.pid}")
    assert requeue_lost_jobs() == 1
    job.refresh_from_db()
    assert job.status == Job.Status.RETRYING
    assert "is gone" in job.last_error


def test_a_live_worker_on_this_host_is_left_alone():
    job = enqueue("test.ok")
    start_without_finishing(job, worker_identity())
    assert requeue_lost_jobs() == 0
    assert Job.objects.get(pk=job.pk).status == Job.Status.RUNNING


def test_a_job_that_keeps_killing_its_worker_ends_dead_not_looping():
    job = enqueue("test.ok", max_attempts=2)
    for _ in range(2):
        Job.objects.filter(pk=job.pk).update(status=Job.Status.PENDING)
        start_without_finishing(job, "other-host:1")
        with time_machine.travel(timezone.now() + timedelta(minutes=10)):
            requeue_lost_jobs()
    job.refresh_from_db()
    assert job.status == Job.Status.DEAD and job.runs == 2
