"""Job types for the tests (registered in test processes and, via JOB_HANDLER_MODULES, in
the worker processes the tests start)."""

import gc
import os
import signal

from django.contrib.auth import get_user_model
from django.db import transaction

from portal.events.services import emit_many
from portal.jobs.errors import PermanentJobError, TransientJobError
from portal.jobs.models import Job
from portal.jobs.registry import SucceededWith, job_handler
from portal.jobs.runner import enqueue


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


@job_handler("test.gc_frozen", max_attempts=1)
def gc_frozen(job):
    """How many objects the process running it keeps out of the garbage collector's walks."""
    return {"frozen": gc.get_freeze_count()}


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


@job_handler("test.count_events", max_attempts=3, backoff_base=1, queue="events")
def count_events(job):
    """test.count on the event deliveries' queue (served by WORKER_QUEUE=events workers)."""
    return {"ran_in": os.getpid(), "node": os.getpgrp()}


@job_handler("test.chain", max_attempts=1)
def chain(job):
    """Queues `follow_up` (a job type) as a follow-up of itself and, with `events`, a
    test.count_events job the usual way; says which process ran it."""
    if job.payload.get("follow_up"):
        enqueue(job.payload["follow_up"], {}, follow_up=True)
    if job.payload.get("events"):
        enqueue("test.count_events", {})
    return {"ran_in": os.getpid(), "node": os.getpgrp()}


@job_handler("test.chain_rolled_back", max_attempts=1)
def chain_rolled_back(job):
    """Queues a test.count follow-up in a transaction that then rolls back."""
    try:
        with transaction.atomic():
            enqueue("test.count", {}, follow_up=True)
            raise RuntimeError("changed its mind")
    except RuntimeError:
        pass
    return "ok"


@job_handler("test.emit", max_attempts=1)
def emit_events(job):
    """Emits `count` test events in one transaction, as the sync engine emits its changes."""
    with transaction.atomic():
        emit_many([("test", {"n": n}, "", None) for n in range(job.payload.get("count", 1))])
    return "ok"
