"""Find runs whose worker is gone and count them as failed attempts."""

from __future__ import annotations

import os
import socket

from django.db.models import Q
from django.utils import timezone

from portal.jobs.models import Job
from portal.jobs.registry import JobType, UnknownJobType, get_job_type
from portal.jobs.runner import record_failure


class WorkerLost(Exception):
    """The run's worker died (killed, out of memory, node lost) or the run timed out."""

    transient = True
    retry_after = None


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_gone_here(worker: str) -> bool:
    """True when the worker ran on this host and its process no longer exists."""
    host, _, pid = worker.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not _process_alive(int(pid))


def requeue_lost_jobs() -> int:
    """Running jobs whose lease expired, or whose worker process on this host is gone."""
    now = timezone.now()
    here = socket.gethostname()
    candidates = Job.objects.filter(status=Job.Status.RUNNING).filter(
        Q(lease_expires_at__lt=now) | Q(worker__startswith=f"{here}:")
    )
    recovered = 0
    for job in candidates.only(
        "id", "job_type", "worker", "lease_expires_at", "attempts", "max_attempts"
    ):
        expired = job.lease_expires_at is not None and job.lease_expires_at < now
        if not expired and not worker_gone_here(job.worker):
            continue
        try:
            definition: JobType | None = get_job_type(job.job_type)
        except UnknownJobType:
            definition = None
        reason = "its run timed out" if expired else f"its worker {job.worker} is gone"
        exc = WorkerLost(f"Worker lost: {reason}; counted as a failed attempt.")
        verdict = record_failure(job, exc, definition, 0.0, job.worker, lost=True)
        if verdict in {"retrying", "dead"}:
            recovered += 1
    return recovered
