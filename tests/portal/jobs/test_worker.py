"""The job layer with real django-q2 worker processes."""

import os
import time

import pytest
from django.utils import timezone

from portal.jobs.models import Job, JobAttempt
from portal.jobs.runner import BULK_DISPATCH_MIN, dispatch, enqueue, release_due_jobs
from portal.jobs.watchdog import requeue_lost_jobs


def wait_until(predicate, timeout=60.0, tick=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if tick:
            tick()
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.mark.django_db(transaction=True)
def test_workers_run_every_job_once(qcluster):
    jobs = [enqueue("test.count") for _ in range(30)]
    # And a bulk dispatch (what retry-all uses), whose packages we build ourselves.
    bulk = Job.objects.bulk_create(
        Job(job_type="test.count", dispatched_at=timezone.now()) for _ in range(BULK_DISPATCH_MIN)
    )
    dispatch([job.pk for job in bulk])
    jobs += bulk
    cluster = qcluster(workers=2)
    ids = [job.pk for job in jobs]
    total = len(ids)
    assert wait_until(lambda: Job.objects.filter(pk__in=ids, status="succeeded").count() == total)
    # Once each: one attempt per job, and each counted one run.
    assert sorted(JobAttempt.objects.filter(job_id__in=ids).values_list("job_id", flat=True)) == (
        sorted(ids)
    )
    assert set(Job.objects.filter(pk__in=ids).values_list("runs", flat=True)) == {1}
    # By the workers: each ran in a process of the cluster started above (its own process
    # group), none in this test process.
    results = [job.result for job in Job.objects.filter(pk__in=ids)]
    assert {result["node"] for result in results} == {cluster.pid}
    assert os.getpid() not in {result["ran_in"] for result in results}


@pytest.mark.django_db(transaction=True)
def test_a_job_that_kills_its_worker_is_recovered_and_finally_dead_letters(qcluster):
    killer = enqueue("test.kill_worker")
    survivor = enqueue("test.count")
    qcluster(workers=2)

    def sweep():
        # What the watchdog and release schedules do every minute, sooner.
        requeue_lost_jobs()
        release_due_jobs()

    assert wait_until(
        lambda: Job.objects.get(pk=killer.pk).status == "dead", timeout=90, tick=sweep
    )
    killer.refresh_from_db()
    assert killer.runs == 2  # its two attempts, each counted when it started
    assert set(JobAttempt.objects.filter(job=killer).values_list("outcome", flat=True)) == {"lost"}
    assert wait_until(lambda: Job.objects.get(pk=survivor.pk).status == "succeeded")
