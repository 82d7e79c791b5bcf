"""The job layer's own job types."""

from __future__ import annotations

from typing import Any

from portal.jobs.bulk import KINDS, process
from portal.jobs.models import BulkOperation
from portal.jobs.registry import job_handler


def _bulk_retry_permission(job: Any) -> str:
    """Re-running a bulk operation needs its kind's permission (e.g. renew_subscription)."""

    kind = (
        BulkOperation.objects.filter(pk=job.payload.get("operation_id"))
        .values_list("kind", flat=True)
        .first()
    )
    return KINDS[kind].permission if kind in KINDS else "retry_all_jobs"


@job_handler(
    "jobs.bulk",
    label="Bulk operation",
    max_attempts=10,
    backoff_base=5,
    timeout=280,
    retry_permission=_bulk_retry_permission,
    description="Work through a bulk operation's frozen targets in chunks (resumable)",
)
def bulk_operation(job: Any) -> dict[str, int]:
    return process(job.payload["operation_id"])


@job_handler(
    "jobs.noop",
    label="Test job (does nothing)",
    max_attempts=3,
    backoff_base=1,
    timeout=30,
    description="Does nothing; for health checks and benchmarks",
)
def noop(job: Any) -> None:
    return None
