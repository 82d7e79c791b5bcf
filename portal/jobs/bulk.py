"""Bulk operations: freeze the targets, then work through them in chunks as a job.

Each kind says which permission starts (cancels, and re-runs) it and how one chunk is applied. The
targets are frozen with one INSERT … SELECT when the operator confirms, so what runs is
exactly what the preview counted, never what matches later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.jobs.models import BulkOperation, BulkOperationItem
from portal.jobs.runner import enqueue

JOB_TYPE = "jobs.bulk"


@dataclass
class ChunkResult:
    done: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)  # target id -> why
    # Targets in neither set were skipped (their state changed since the preview).


@dataclass(frozen=True)
class BulkKind:
    name: str
    label: str  # shown on the progress page, e.g. "Retry all"
    permission: str
    action: str  # the audit action of starting it
    chunk_size: int
    apply: Callable[[BulkOperation, list[int]], ChunkResult]
    back_url: str = ""  # where the progress page links back to (a URL name)


KINDS: dict[str, BulkKind] = {}


class BulkError(Exception):
    """A bulk action that cannot be carried out (the message says why)."""


def register(kind: BulkKind) -> BulkKind:
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> BulkKind:
    try:
        return KINDS[name]
    except KeyError:
        raise BulkError(f"Unknown bulk operation {name!r}.") from None


def start(
    actor: Actor,
    kind_name: str,
    targets: QuerySet,
    filters: dict[str, Any],
    audit_params: dict[str, Any] | None = None,
) -> BulkOperation:
    """Check the role, freeze the targets' ids, queue the job that works through them."""

    kind = get_kind(kind_name)
    require(actor, kind.permission, action=kind.action, target_type="bulk_operation")
    with transaction.atomic():
        operation = BulkOperation.objects.create(
            kind=kind.name, filters=filters, created_by=actor.name
        )
        ids_sql, params = (
            targets.order_by()
            .annotate(frozen_target=F("pk"))
            .values("frozen_target")
            .query.sql_with_params()
        )
        table = BulkOperationItem._meta.db_table
        with connection.cursor() as cursor:
            # INSERT … SELECT: freezing 100,000 ids costs one statement, not 100,000 rows
            # through Python.
            cursor.execute(
                f"INSERT INTO {table} (operation_id, target_id, result, error) "  # noqa: S608
                f"SELECT %s, frozen.frozen_target, %s, '' FROM ({ids_sql}) AS frozen",
                [operation.pk, BulkOperationItem.Result.WAITING, *params],
            )
            total = cursor.rowcount
        job = enqueue(
            JOB_TYPE,
            {"operation_id": operation.pk},
            created_by=actor.name,
            correlation_id=f"bulk-{operation.pk}",
        )
        BulkOperation.objects.filter(pk=operation.pk).update(total=total, job=job)
        record(
            kind.action,
            actor=actor,
            target_type="bulk_operation",
            target_id=operation.pk,
            params={"filters": filters, "count": total, **(audit_params or {})},
        )
        operation.refresh_from_db()
    return operation


def cancel(actor: Actor, operation_id: int) -> BulkOperation:
    operation = BulkOperation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise BulkError(f"There is no bulk operation #{operation_id}.")
    require(
        actor,
        get_kind(operation.kind).permission,
        action="bulk.cancel",
        target_type="bulk_operation",
        target_id=operation_id,
    )
    with transaction.atomic():
        updated = BulkOperation.objects.filter(
            pk=operation_id,
            status__in=(BulkOperation.Status.PENDING, BulkOperation.Status.RUNNING),
        ).update(status=BulkOperation.Status.CANCELLED, finished_at=timezone.now())
        if not updated:
            raise BulkError(f"Bulk operation #{operation_id} is not running.")
        record("bulk.cancel", actor=actor, target_type="bulk_operation", target_id=operation_id)
    return BulkOperation.objects.get(pk=operation_id)


def process(operation_id: int) -> dict[str, int]:
    """Work through an operation chunk by chunk; resumable, stops when cancelled."""
    BulkOperation.objects.filter(pk=operation_id, status=BulkOperation.Status.PENDING).update(
        status=BulkOperation.Status.RUNNING
    )
    while True:
        operation = BulkOperation.objects.get(pk=operation_id)
        if operation.status != BulkOperation.Status.RUNNING:
            break
        kind = get_kind(operation.kind)
        items = list(
            BulkOperationItem.objects.filter(
                operation_id=operation_id, result=BulkOperationItem.Result.WAITING
            )
            .order_by("id")
            .values_list("id", "target_id")[: kind.chunk_size]
        )
        if not items:
            BulkOperation.objects.filter(pk=operation_id).update(
                status=BulkOperation.Status.DONE, finished_at=timezone.now()
            )
            break
        with transaction.atomic():
            result = kind.apply(operation, [target for _, target in items])
            _record_chunk(operation_id, items, result)
    operation = BulkOperation.objects.get(pk=operation_id)
    return {
        "processed": operation.processed,
        "succeeded": operation.succeeded,
        "skipped": operation.skipped,
        "failed": operation.failed,
    }


def _record_chunk(operation_id: int, items: list[tuple[int, int]], result: ChunkResult) -> None:
    done = [item for item, target in items if target in result.done]
    skipped = [
        item for item, target in items if target not in result.done and target not in result.failed
    ]
    BulkOperationItem.objects.filter(pk__in=done).update(result=BulkOperationItem.Result.DONE)
    BulkOperationItem.objects.filter(pk__in=skipped).update(result=BulkOperationItem.Result.SKIPPED)
    for item, target in items:
        if target in result.failed:
            BulkOperationItem.objects.filter(pk=item).update(
                result=BulkOperationItem.Result.FAILED, error=result.failed[target][:2000]
            )
    BulkOperation.objects.filter(pk=operation_id).update(
        processed=F("processed") + len(items),
        succeeded=F("succeeded") + len(done),
        skipped=F("skipped") + len(skipped),
        failed=F("failed") + len(items) - len(done) - len(skipped),
    )
