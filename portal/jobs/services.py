"""Operator actions on jobs. Each checks the role and writes an audit event with its effect."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.access.actors import Actor
from portal.access.authz import require
from portal.approvals import gate
from portal.audit.services import record
from portal.jobs import bulk
from portal.jobs.models import BulkOperation, Job, PausedJobType
from portal.jobs.registry import retry_permission, type_retry_permission
from portal.jobs.runner import dispatch, paused_types

RETRYABLE = (Job.Status.DEAD, Job.Status.RETRYING, Job.Status.CANCELLED)
# Above APPROVAL_BULK_THRESHOLD jobs, the approval policy may ask for a second person.
RETRY_ALL_ACTION = "jobs.retry_all"
BULK_CHUNK = 1000


class JobActionError(Exception):
    """An action that cannot be done in the job's current state (the message says why)."""


def _get_job(job_id: Any) -> Job:
    try:
        return Job.objects.get(pk=int(job_id))
    except (Job.DoesNotExist, TypeError, ValueError):
        raise JobActionError(f"There is no job #{job_id}.") from None


def _requeue(ids: list[int], retried_by: str) -> int:
    """Make retryable jobs pending again (their history stays) and dispatch the runnable ones."""
    now = timezone.now()
    paused = paused_types()
    queryset = Job.objects.filter(pk__in=ids, status__in=RETRYABLE)
    runnable = list(queryset.exclude(job_type__in=paused).values_list("id", flat=True))
    reset = {
        "status": Job.Status.PENDING,
        "attempts": 0,
        "next_attempt_at": None,
        "finished_at": None,
        "retried_by": retried_by[:150],
    }
    # Jobs of a paused type wait undispatched; resume_job_type dispatches them.
    changed = queryset.filter(job_type__in=paused).update(dispatched_at=None, **reset)
    changed += Job.objects.filter(pk__in=runnable).update(dispatched_at=now, **reset)
    dispatch(runnable)
    return changed


def not_permitted(actor: Actor, queryset: QuerySet[Job]) -> QuerySet[Job]:
    """The jobs of `queryset` whose work the actor may not start, so may not re-run."""
    refused_types, refused_ids = [], []
    for job_type in queryset.order_by().values_list("job_type", flat=True).distinct():
        permission = type_retry_permission(job_type)
        if permission is None:  # depends on each job (few of these: runs, bulk operations)
            refused_ids += [
                job.pk
                for job in queryset.filter(job_type=job_type).only("id", "job_type", "payload")
                if not actor.can(retry_permission(job))
            ]
        elif not actor.can(permission):
            refused_types.append(job_type)
    return queryset.filter(Q(job_type__in=refused_types) | Q(pk__in=refused_ids))


def retry_job(actor: Actor, job_id: Any) -> Job:
    require(actor, "retry_job", action="job.retry", target_type="job", target_id=job_id)
    # Outside the transaction, so a denial is recorded.
    require(
        actor,
        retry_permission(_get_job(job_id)),
        action="job.retry",
        target_type="job",
        target_id=job_id,
    )
    with transaction.atomic():
        job = _get_job(job_id)
        if job.status not in RETRYABLE:
            raise JobActionError(
                f"Job #{job.pk} is {job.status}; only dead, retrying or cancelled jobs can be "
                "retried."
            )
        before = job.status
        _requeue([job.pk], retried_by=actor.name)
        record(
            "job.retry",
            actor=actor,
            target_type="job",
            target_id=job.pk,
            params={"job_type": job.job_type, "before": before, "runs_so_far": job.runs},
        )
        job.refresh_from_db()
    return job


def discard_job(actor: Actor, job_id: Any, reason: str) -> Job:
    require(actor, "discard_job", action="job.discard", target_type="job", target_id=job_id)
    reason = (reason or "").strip()
    if not reason:
        raise JobActionError("Say why the job is discarded; the reason goes in the audit log.")
    with transaction.atomic():
        job = _get_job(job_id)
        if job.status in (Job.Status.SUCCEEDED, Job.Status.CANCELLED, Job.Status.RUNNING):
            raise JobActionError(f"Job #{job.pk} is {job.status} and cannot be discarded.")
        before = job.status
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.CANCELLED, finished_at=timezone.now(), next_attempt_at=None
        )
        record(
            "job.discard",
            actor=actor,
            target_type="job",
            target_id=job.pk,
            params={"job_type": job.job_type, "before": before},
            reason=reason,
        )
        job.refresh_from_db()
    return job


def pause_job_type(actor: Actor, job_type: str, reason: str = "") -> PausedJobType:
    require(
        actor, "pause_processing", action="jobs.pause", target_type="job_type", target_id=job_type
    )
    with transaction.atomic():
        paused, created = PausedJobType.objects.get_or_create(
            job_type=job_type, defaults={"paused_by": actor.name, "reason": reason}
        )
        record(
            "jobs.pause",
            actor=actor,
            target_type="job_type",
            target_id=job_type,
            params={"already_paused": not created},
            reason=reason,
        )
    return paused


def resume_job_type(actor: Actor, job_type: str) -> int:
    """Resume a type; its waiting jobs are dispatched. Returns how many."""
    require(
        actor, "pause_processing", action="jobs.resume", target_type="job_type", target_id=job_type
    )
    now = timezone.now()
    with transaction.atomic():
        deleted, _ = PausedJobType.objects.filter(job_type=job_type).delete()
        waiting = list(
            Job.objects.filter(
                job_type=job_type, status=Job.Status.PENDING, dispatched_at__isnull=True
            )
            .exclude(next_attempt_at__gt=now)
            .values_list("id", flat=True)
        )
        Job.objects.filter(pk__in=waiting).update(dispatched_at=now)
        dispatch(waiting)
        record(
            "jobs.resume",
            actor=actor,
            target_type="job_type",
            target_id=job_type,
            params={"was_paused": bool(deleted), "released": len(waiting)},
        )
    return len(waiting)


# --- Retry all ------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a bulk action covers. Empty fields match everything."""

    status: str = Job.Status.DEAD
    job_type: str = ""
    error_signature: str = ""

    def queryset(self) -> QuerySet[Job]:
        queryset = Job.objects.filter(status=self.status)
        if self.job_type:
            queryset = queryset.filter(job_type=self.job_type)
        if self.error_signature:
            queryset = queryset.filter(error_signature=self.error_signature)
        return queryset

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}


@dataclass(frozen=True)
class BulkPreview:
    count: int  # jobs matching the filter
    sample: list[Job]
    refused: int = 0  # of those, jobs the caller may not re-run (skipped)

    @property
    def permitted(self) -> int:
        return self.count - self.refused


def preview_retry_all(job_filter: JobFilter, sample_size: int = 5, *, actor: Actor) -> BulkPreview:
    queryset = job_filter.queryset()
    return BulkPreview(
        count=queryset.count(),
        sample=list(queryset.order_by("-id")[:sample_size]),
        refused=not_permitted(actor, queryset).count(),
    )


def start_retry_all(actor: Actor, job_filter: JobFilter) -> BulkOperation:
    """Freeze the matching ids the actor may re-run, then retry them in the background; the
    others are skipped and counted in the audit event."""
    if job_filter.status not in RETRYABLE:
        raise JobActionError("Only dead, retrying or cancelled jobs can be retried.")
    queryset = job_filter.queryset()
    refused = not_permitted(actor, queryset)
    gate.check(
        actor,
        RETRY_ALL_ACTION,
        {"filter": job_filter.as_dict()},
        count=queryset.exclude(pk__in=refused.values("pk")).count(),
    )
    return bulk.start(
        actor,
        "retry",
        queryset.exclude(pk__in=refused.values("pk")),
        job_filter.as_dict(),
        audit_params={"skipped_not_permitted": refused.count()},
    )


def _retry_chunk(operation: BulkOperation, job_ids: list[int]) -> bulk.ChunkResult:
    retried = set(
        Job.objects.filter(pk__in=job_ids, status__in=RETRYABLE).values_list("id", flat=True)
    )
    _requeue(list(retried), retried_by=operation.created_by)
    return bulk.ChunkResult(done=retried)


bulk.register(
    bulk.BulkKind(
        name="retry",
        label="Retry all",
        permission="retry_all_jobs",
        action="job.retry_all",
        chunk_size=BULK_CHUNK,
        apply=_retry_chunk,
        back_url="console:jobs",
    )
)
