"""The runbook's JSON API (queue and metrics; the sync endpoints join with the sync engine)."""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from integrations.microsoft.models import NotificationInbox
from portal.access.actors import Actor
from portal.access.decorators import public
from portal.alerts import measurements
from portal.api.framework import ENDPOINTS, TENANT_WIDE, ApiError, Owned, api_endpoint
from portal.jobs import services as job_services
from portal.jobs.models import BulkOperation, Job
from portal.jobs.services import JobActionError, JobFilter
from portal.jobs.stats import queue_metrics

MAX_PAGE = 200


def job_json(job: Job) -> dict[str, Any]:
    return {
        "id": job.pk,
        "type": job.job_type,
        "status": job.status,
        "attempts": job.attempts,
        "maxAttempts": job.max_attempts,
        "runs": job.runs,
        "createdAt": job.created_at,
        "finishedAt": job.finished_at,
        "nextAttemptAt": job.next_attempt_at,
        "lastError": job.last_error,
        "errorSignature": job.error_signature,
        "correlationId": job.correlation_id,
    }


def int_param(
    request: HttpRequest,
    name: str,
    default: int | None,
    *,
    minimum: int = 1,
    maximum: int | None = None,
) -> int | None:
    raw = request.GET.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(
            400, "invalid_parameter", f"{name} must be a whole number.", field=name
        ) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ApiError(
            400,
            "invalid_parameter",
            f"{name} must be between {minimum} and {maximum or 'any'}.",
            field=name,
        )
    return value


@api_endpoint(
    "/api/queue/dead-letter",
    "GET",
    "view_console",
    "List dead jobs (the dead-letter queue), newest first, keyset-paged.",
    query={"limit": "1-200 (default 50)", "before": "a job id (next page)", "type": "job type"},
)
def dead_letter(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    limit = int_param(request, "limit", 50, maximum=MAX_PAGE) or 50
    before = int_param(request, "before", None)
    queryset = Job.objects.filter(status=Job.Status.DEAD)
    if request.GET.get("type"):
        queryset = queryset.filter(job_type=request.GET["type"])
    total = queryset.count()
    if before:
        queryset = queryset.filter(pk__lt=before)
    jobs = list(queryset.order_by("-id")[: limit + 1])
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return {
        "count": total,
        "jobs": [job_json(job) for job in jobs],
        "nextBefore": jobs[-1].pk if more else None,
    }


@api_endpoint(
    "/api/queue/retry/{jobId}",
    "POST",
    "retry_job",
    "Retry one dead, retrying or cancelled job now (its history is kept).",
    responses={
        "200": "the job, pending again",
        "404": "no such job",
        "409": "the job is not in a retryable state",
    },
    scope=TENANT_WIDE,
)
def retry_one(request: HttpRequest, actor: Actor, body: dict, job_id: str) -> dict[str, Any]:
    # At most 18 digits: a bigint, and Python refuses to read more than 4,300 as an int.
    if not (job_id.isascii() and job_id.isdigit() and len(job_id) <= 18):
        raise ApiError(404, "not_found", f"There is no job {job_id[:40]}.")
    if not Job.objects.filter(pk=int(job_id)).exists():
        raise ApiError(404, "not_found", f"There is no job {job_id}.")
    try:
        job = job_services.retry_job(actor, int(job_id))
    except JobActionError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return {"job": job_json(job)}


@api_endpoint(
    "/api/queue/retry-all",
    "POST",
    "retry_all_jobs",
    "Retry every dead job (or those matching type/errorSignature) as a background "
    "bulk operation over the ids frozen now.",
    request_body={
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "errorSignature": {"type": "string"},
            "status": {"type": "string", "enum": ["dead", "retrying", "cancelled"]},
        },
    },
    responses={
        "202": "operation started: id, count, skippedNotPermitted "
        "(jobs whose work the caller may not start), statusUrl",
        "200": "nothing matched (or nothing the caller may retry)",
    },
)
def retry_all(request: HttpRequest, actor: Actor, body: dict) -> Any:
    for key in ("type", "errorSignature", "status"):
        if key in body and not isinstance(body[key], str):
            raise ApiError(400, "invalid_body", f"{key} must be a string.")
    job_filter = JobFilter(
        status=body.get("status") or Job.Status.DEAD,
        job_type=body.get("type", ""),
        error_signature=body.get("errorSignature", ""),
    )
    if job_filter.status not in job_services.RETRYABLE:
        raise ApiError(400, "invalid_body", "status must be dead, retrying or cancelled.")
    queryset = job_filter.queryset()
    skipped = job_services.not_permitted(actor, queryset).count()
    if not queryset.exists() or skipped == queryset.count():
        return {"operationId": None, "count": 0, "skippedNotPermitted": skipped}
    try:
        operation = job_services.start_retry_all(actor, job_filter)
    except JobActionError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    return JsonResponse(
        {
            "operationId": operation.pk,
            "count": operation.total,
            # Jobs whose work the caller may not start are not retried (audited with the count).
            "skippedNotPermitted": skipped,
            "statusUrl": reverse("api:operation", args=[operation.pk]),
        },
        status=202,
    )


@api_endpoint(
    "/api/queue/operations/{operationId}",
    "GET",
    "view_console",
    "Progress of a bulk operation.",
    scope=TENANT_WIDE,
)
def operation_status(
    request: HttpRequest, actor: Actor, body: dict, operation_id: int
) -> dict[str, Any]:
    operation = BulkOperation.objects.filter(pk=operation_id).first()
    if operation is None:
        raise ApiError(404, "not_found", f"There is no bulk operation {operation_id}.")
    return {
        "id": operation.pk,
        "kind": operation.kind,
        "status": operation.status,
        "total": operation.total,
        "processed": operation.processed,
        "succeeded": operation.succeeded,
        "skipped": operation.skipped,
        "progressPercent": operation.progress_percent,
        "filters": operation.filters,
        "createdBy": operation.created_by,
        "createdAt": operation.created_at,
        "finishedAt": operation.finished_at,
    }


@api_endpoint(
    "/api/metrics/queue",
    "GET",
    "view_console",
    "Queue depth by state (`.pending` as the runbook reads it) and by job type; the backlog "
    "(queueLength, oldestDueSeconds: jobs due and not started, as the dashboard and the alert "
    "count them); and the notification inbox's backlog (notificationsPending, "
    "oldestNotificationSeconds).",
    trusted_network=True,
)
def metrics_queue(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    # Notifications wait in the inbox, not as jobs (the inbox is the queue): their backlog.
    oldest = NotificationInbox.objects.oldest_pending_seconds()
    return {
        **queue_metrics(),
        "notificationsPending": NotificationInbox.objects.pending().count(),
        "oldestNotificationSeconds": int(oldest) if oldest is not None else 0,
    }


@api_endpoint(
    "/api/metrics/gateway",
    "GET",
    "view_console",
    "Outbound messages failed in the last hour, the oldest unsent message's age (null: none), "
    "event endpoints failing or disabled, and events waiting for delivery (paused endpoints "
    "left out).",
    trusted_network=True,
)
def metrics_gateway(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    return measurements.gateway_figures()


@public
def openapi(request: HttpRequest) -> JsonResponse:
    """The OpenAPI 3.1 document, built from the endpoint declarations."""
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in ENDPOINTS:
        parameters = (
            [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in _path_params(endpoint.path)
            ]
            + [
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": description,
                    "schema": {"type": "string"},
                }
                for name, description in endpoint.query.items()
            ]
            + [
                {
                    "name": name,
                    "in": "header",
                    "required": True,
                    "description": description,
                    "schema": {"type": "string", "maxLength": 255},
                }
                for name, description in endpoint.headers.items()
            ]
        )
        responses: dict[str, dict[str, Any]] = (
            {} if "202" in endpoint.responses else {"200": {"description": "OK"}}
        )
        responses.update({code: {"description": text} for code, text in endpoint.responses.items()})
        if isinstance(endpoint.scope, Owned):
            responses.setdefault(
                "404", {"description": f"no such {endpoint.scope.noun}, or not the caller's"}
            )
        for code, text in (
            ("400", "bad input"),
            ("401", "no or bad token"),
            ("403", "the role may not do this"),
        ):
            responses.setdefault(
                code,
                {
                    "description": text,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                    },
                },
            )
        operation: dict[str, Any] = {
            "summary": endpoint.summary,
            "description": f"Requires `{endpoint.permission}`."
            + (
                " Callers on API_TRUSTED_NETWORKS need no token."
                if endpoint.trusted_network
                else ""
            ),
            "parameters": parameters,
            "responses": responses,
            "security": [{"bearer": []}] + ([{}] if endpoint.trusted_network else []),
        }
        if endpoint.request_body is not None:
            operation["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": endpoint.request_body}},
            }
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation
    return JsonResponse(
        {
            "openapi": "3.1.0",
            "info": {"title": "Fleet Graph Portal API", "version": "1"},
            "paths": paths,
            "components": {
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                "schemas": {
                    "Error": {
                        "type": "object",
                        "required": ["error", "detail"],
                        "properties": {
                            "error": {"type": "string"},
                            "detail": {"type": "string"},
                            "field": {"type": "string"},
                        },
                    }
                },
            },
        }
    )


def _path_params(path: str) -> list[str]:
    return re.findall(r"{(\w+)}", path)
