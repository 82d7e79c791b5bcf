"""Job types for the tests (registered in test processes and, via JOB_HANDLER_MODULES, in
the worker processes the tests start)."""

import os
import signal

from django.contrib.auth import get_user_model

from portal.jobs.errors import PermanentJobError, TransientJobError
from portal.jobs.models import Job
from portal.jobs.registry import SucceededWith, job_handler


@job_handler("test.ok", max_attempts=3, backoff_base=1)
def ok(job):
    return {"echo": job.payload.get("value")}


@job_handler("test.flaky", max_attempts=4, backoff_base=10, backoff_cap=40)
def flaky(job):
    """Fails transiently in its first `fail_times` runs (across manual retries)."""
    if job.runs <= job.payload.get("fail_times", 1):
        raise TransientJobError(
            f"flaky failure {job.runs} at 0x{id(job):x}", retry_after=job.payload.get("retry_after")
        )
    return "ok"


@job_handler("test.permanent", max_attempts=5)
def permanent(job):
    raise PermanentJobError("the mailbox does not exist")


@job_handler("test.bug", max_attempts=2, backoff_base=1)
def bug(job):
    raise KeyError(f"user {job.pk} client_secret=hunter2 Bearer abcdefghijklmnop")


@job_handler("test.kill_worker", max_attempts=2, backoff_base=1, timeout=5)
def kill_worker(job):
    """Kills the process running it, as an out-of-memory kill would."""
    os.kill(os.getpid(), signal.SIGKILL)


@job_handler("test.count", max_attempts=3, backoff_base=1)
def count(job):
    """Says which process and which node (process group: one per qcluster) ran it."""
    return {"ran_in": os.getpid(), "node": os.getpgrp()}


@job_handler("test.admin_work", max_attempts=1, retry_permission="run_recovery")
def admin_work(job):
    """Work only an admin may start (and so re-run)."""
    return "ok"


@job_handler("test.rename_user", max_attempts=2, backoff_base=1)
def rename_user(job):
    """Renames a user with its success; `given_up` has the watchdog take the run over first."""
    if job.payload.get("given_up"):
        Job.objects.filter(pk=job.pk).update(status=Job.Status.RETRYING)
    return SucceededWith(
        "renamed", get_user_model(), job.payload["user"], {"first_name": job.payload["name"]}
    )
