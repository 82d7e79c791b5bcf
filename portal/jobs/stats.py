"""Job counts by state that stay cheap on millions of rows.

Succeeded jobs are most of the table and nobody acts on them, so their number is the
planner's estimate on PostgreSQL (exact on SQLite and on small tables); every other state is
counted exactly through the (status, id) index.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from portal.jobs.models import Job, PausedJobType

EXACT_BELOW = 100_000


def succeeded_count(active_total: int) -> tuple[int, bool]:
    """(number, exact?)"""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [Job._meta.db_table]
            )
            row = cursor.fetchone()
        estimate = int(row[0]) if row else -1
        if estimate >= EXACT_BELOW:
            return max(0, estimate - active_total), False
    return Job.objects.filter(status=Job.Status.SUCCEEDED).count(), True


def state_counts() -> tuple[dict[str, int], bool]:
    """Every state's count, and whether the succeeded figure is exact."""
    counts = Job.objects.active_counts()
    counts[Job.Status.SUCCEEDED], exact = succeeded_count(sum(counts.values()))
    return counts, exact


def queue_metrics(*, by_type: bool = True) -> dict[str, Any]:
    """The runbook's queue figures (`GET /api/metrics/queue`, the dashboard tile)."""
    counts, exact = state_counts()
    oldest_due = Job.objects.oldest_due_seconds()
    result: dict[str, Any] = {
        "pending": counts[Job.Status.PENDING],
        # What the queue_length alert watches: jobs due and not started (Job.objects.due).
        "queueLength": Job.objects.queue_length(),
        "running": counts[Job.Status.RUNNING],
        "retrying": counts[Job.Status.RETRYING],
        "dead": counts[Job.Status.DEAD],
        "succeeded": counts[Job.Status.SUCCEEDED],
        "succeededIsEstimate": not exact,
        "cancelled": counts[Job.Status.CANCELLED],
        "oldestDueSeconds": int(oldest_due) if oldest_due is not None else 0,
        "pausedTypes": sorted(PausedJobType.objects.values_list("job_type", flat=True)),
    }
    if by_type:
        result["byType"] = Job.objects.active_counts_by_type()
    return result
