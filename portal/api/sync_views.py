"""The runbook's sync and metrics endpoints."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.http import HttpRequest, JsonResponse
from django.utils import timezone

from integrations.microsoft import backoff, diagnosis, sync
from integrations.microsoft.models import (
    GraphCall,
    MonitoredUser,
    Probe,
    ResourceKind,
    SyncRun,
    SyncState,
)
from integrations.microsoft.probe import setup_problem as probe_setup_problem
from portal.access.actors import Actor
from portal.api.framework import TENANT_WIDE, ApiError, api_endpoint

KINDS = [kind.value for kind in ResourceKind]
SYNC_BODY = {
    "type": "object",
    "required": ["userId"],
    "properties": {
        "userId": {"type": "string", "description": "UPN (as in the runbook) or Graph user id"},
        "resourceType": {"type": "string", "enum": KINDS},
    },
}


def find_user(identifier: Any) -> MonitoredUser:
    """A monitored user by UPN, identifier or Graph id (case-insensitive for UPNs)."""
    if not isinstance(identifier, str) or not identifier.strip():
        raise ApiError(400, "invalid_body", "userId (a UPN or Graph user id) is required.")
    user = MonitoredUser.objects.lookup(identifier)
    if user is None:
        raise ApiError(404, "not_found", f"{identifier.strip()} is not a monitored user.")
    return user


def _kinds(user: MonitoredUser, body: dict[str, Any], *, required: bool) -> list[str]:
    kind = body.get("resourceType")
    if kind is None:
        if required:
            raise ApiError(400, "invalid_body", f"resourceType is required: one of {KINDS}.")
        return list(user.kinds)
    if kind not in KINDS:
        raise ApiError(400, "invalid_body", f"resourceType must be one of {KINDS}.")
    if kind not in user.kinds:
        raise ApiError(409, "conflict", f"{user.upn or user.identifier} is not watched for {kind}.")
    return [kind]


@api_endpoint(
    "/api/sync/reset",
    "POST",
    "sync_reset",
    "Drop a user's delta token for a resource type: the next run is a full sync.",
    request_body=SYNC_BODY,
)
def sync_reset(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    user = find_user(body.get("userId"))
    kinds = _kinds(user, body, required=True)
    for kind in kinds:
        sync.reset(actor, user.pk, kind)
    return {
        "userId": user.upn or user.identifier,
        "reset": kinds,
        "detail": "The next sync of each is a full sync.",
    }


@api_endpoint(
    "/api/sync/full",
    "POST",
    "sync_full",
    "Reset and run a full sync now (all the user's resource types unless one is given).",
    request_body=SYNC_BODY,
    responses={"202": "jobs queued"},
)
def sync_full(request: HttpRequest, actor: Actor, body: dict) -> JsonResponse:
    user = find_user(body.get("userId"))
    jobs = {
        kind: sync.full_sync(actor, user.pk, kind).pk for kind in _kinds(user, body, required=False)
    }
    return JsonResponse({"userId": user.upn or user.identifier, "jobs": jobs}, status=202)


@api_endpoint(
    "/api/sync/delta",
    "POST",
    "sync_delta",
    "Run a delta sync now (coalesced with one already waiting).",
    request_body=SYNC_BODY,
    responses={"202": "jobs queued"},
)
def sync_delta(request: HttpRequest, actor: Actor, body: dict) -> JsonResponse:
    user = find_user(body.get("userId"))
    jobs = {
        kind: sync.delta_now(actor, user.pk, kind).pk for kind in _kinds(user, body, required=False)
    }
    return JsonResponse({"userId": user.upn or user.identifier, "jobs": jobs}, status=202)


BACKOFF_BODY = {
    "type": "object",
    "required": ["mailbox", "minutes", "reason"],
    "properties": {
        "mailbox": {"type": "string", "description": "UPN or Graph user id"},
        "minutes": {
            "type": "integer",
            "minimum": backoff.MIN_MINUTES,
            "maximum": backoff.MAX_MINUTES,
        },
        "reason": {"type": "string", "description": "Why (kept in the audit log)"},
    },
}


@api_endpoint(
    "/api/graph/mailbox-backoff",
    "POST",
    "pause_processing",
    "Back off one mailbox: no Graph request for it for `minutes` (1 to 1440); its jobs, "
    "retries included, wait until the end time. Audited with the reason.",
    request_body=BACKOFF_BODY,
    responses={"201": "backed off until `until`", "400": "bad mailbox, minutes or reason"},
)
def mailbox_backoff(request: HttpRequest, actor: Actor, body: dict) -> JsonResponse:
    minutes = body.get("minutes")
    if not isinstance(minutes, int) or isinstance(minutes, bool):
        raise ApiError(400, "invalid_field", "minutes must be a whole number.", field="minutes")
    mailbox, reason = body.get("mailbox"), body.get("reason")
    for name, value in (("mailbox", mailbox), ("reason", reason)):
        if not isinstance(value, str):
            raise ApiError(400, "invalid_field", f"{name} must be a string.", field=name)
    try:
        done = backoff.back_off_mailbox(actor, str(mailbox), minutes, str(reason))
    except backoff.BackoffError as exc:
        field = "minutes" if "minute" in str(exc) else "reason" if "why" in str(exc) else "mailbox"
        raise ApiError(400, "invalid_field", str(exc), field=field) from None
    return JsonResponse(
        {"mailbox": done.mailbox, "graphUserId": done.key, "until": done.until.isoformat()},
        status=201,
    )


def _seconds_since(moment: Any) -> int | None:
    return int((timezone.now() - moment).total_seconds()) if moment else None


@api_endpoint(
    "/api/sync/state/{userId}/{resourceType}",
    "GET",
    "view_console",
    "A user's sync state for one resource type, with its last runs.",
    scope=TENANT_WIDE,
)
def sync_state(
    request: HttpRequest, actor: Actor, body: dict, user_id: str, resource_type: str
) -> dict[str, Any]:
    user = find_user(user_id)
    if resource_type not in KINDS:
        raise ApiError(404, "not_found", f"resourceType must be one of {KINDS}.")
    state = SyncState.objects.filter(monitored_user=user, kind=resource_type).first()
    runs = SyncRun.objects.filter(state=state).order_by("-id")[:5] if state else []
    return {
        "userId": user.upn or user.identifier,
        "graphUserId": user.graph_id,
        "resourceType": resource_type,
        "watched": resource_type in user.kinds,
        "status": state.status if state else "never",
        # The delta link is a cursor into the mailbox; say whether there is one, not what it is.
        "hasDeltaToken": bool(state and state.delta_link),
        "midRound": bool(state and state.next_link),
        "tokenAgeSeconds": _seconds_since(state.token_obtained_at) if state else None,
        "lastSuccessAt": state.last_success_at if state else None,
        "lastAttemptAt": state.last_attempt_at if state else None,
        "lastError": state.last_error if state else "",
        "dueSince": state.due_since if state else None,
        "itemCount": state.item_count if state else 0,
        "totals": {
            "added": state.total_added,
            "updated": state.total_updated,
            "removed": state.total_removed,
        }
        if state
        else {},
        "recentRuns": [
            {
                "kind": run.kind,
                "trigger": run.trigger,
                "outcome": run.outcome,
                "startedAt": run.started_at,
                "durationMs": run.duration_ms,
                "pages": run.pages,
                "added": run.added,
                "updated": run.updated,
                "removed": run.removed,
                "error": run.error,
            }
            for run in runs
        ],
    }


def sync_metrics() -> dict[str, Any]:
    result: dict[str, Any] = {
        "monitoredUsers": MonitoredUser.objects.filter(is_active=True).count(),
        "byResourceType": {
            kind: {
                "states": row["states"],
                "failed": row["failed"],
                "neverSynced": row["never"],
                "dueWithRealtimeOff": row["due"],
                "maxLagSeconds": row["lag_seconds"],
                "lastSuccessAt": row["newest_success"],
                "oldestTokenAgeSeconds": _seconds_since(row["oldest_token"]),
            }
            for kind, row in SyncState.objects.health_by_kind().items()
        },
    }
    # The end-to-end probe's latest finished run per channel (docs/operations.md).
    result["probe"] = {
        "notSetUp": probe_setup_problem() or None,
        "channels": {
            channel: {
                "status": probe.status,
                "finishedAt": probe.finished_at,
                "sendSeconds": probe.send_seconds,
                "notificationSeconds": probe.notification_seconds,
                "deltaSeconds": probe.delta_seconds,
            }
            for channel, probe in Probe.objects.figures_by_channel().items()
        },
    }
    hour_ago = timezone.now() - timedelta(hours=1)
    result["runsLastHour"] = dict(
        SyncRun.objects.filter(started_at__gte=hour_ago)
        .values_list("outcome")
        .annotate(n=Count("id"))
        .order_by()
    )
    return result


@api_endpoint(
    "/api/metrics/sync",
    "GET",
    "view_console",
    "Sync health per resource type: lag, failures, token ages, runs in the last hour.",
    trusted_network=True,
)
def metrics_sync(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    return sync_metrics()


def graph_metrics(window: timedelta = timedelta(hours=1)) -> dict[str, Any]:
    calls = GraphCall.objects.since(timezone.now() - window)
    figures = calls.figures()
    throttled_routes = list(
        calls.filter(throttled=True)
        .values("route")
        .annotate(count=Count("id"))
        .order_by("-count")[:10]
    )
    return {
        "windowSeconds": int(window.total_seconds()),
        "calls": figures.total,
        "succeeded": figures.succeeded,
        "failed": figures.failed,
        "errorRate": round(figures.error_ratio or 0.0, 4),
        "throttled": figures.throttled,
        "serverErrors": figures.server_errors,
        "noResponse": figures.no_response,
        "throttledByRoute": throttled_routes,
    }


@api_endpoint(
    "/api/metrics/graph",
    "GET",
    "view_console",
    "Graph calls in the last hour: error rate, 429s, 429s by route.",
    trusted_network=True,
)
def metrics_graph(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    return graph_metrics()


@api_endpoint(
    "/api/sync/diagnosis/{userId}",
    "GET",
    "view_console",
    "Why isn't this user syncing? A plain-language diagnosis and the user's timeline "
    "(subscriptions, notifications, runs, jobs, 429s; operators' actions with view_audit).",
    query={"window": f"one of {', '.join(diagnosis.TIMELINE_WINDOWS)} (default 24h)"},
    scope=TENANT_WIDE,
)
def sync_diagnosis(request: HttpRequest, actor: Actor, body: dict, user_id: str) -> dict[str, Any]:
    user = find_user(user_id)
    window = request.GET.get("window", "24h")
    if window not in diagnosis.TIMELINE_WINDOWS:
        raise ApiError(
            400,
            "invalid_query",
            f"window must be one of {', '.join(diagnosis.TIMELINE_WINDOWS)}.",
            field="window",
        )
    return diagnosis.user_report(actor, user, window).as_json()
