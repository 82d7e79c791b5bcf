"""Event endpoints (push) through the API: /api/event-endpoints (`events:manage`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.dateparse import parse_datetime

from portal.access.actors import Actor
from portal.api.framework import ApiError, Owned, api_endpoint, by_method
from portal.events.endpoints import (
    EndpointError,
    create_endpoint,
    get_endpoint,
    pause_endpoint,
    replay_delivery,
    replay_since,
    resume_endpoint,
    rotate_secret,
    send_test,
    visible_deliveries,
    visible_endpoints,
)
from portal.events.models import EventDelivery, EventEndpoint

EVENT_ENDPOINT = Owned("event endpoint", "endpoint_id", visible_endpoints)
EVENT_DELIVERY = Owned("delivery", "delivery_id", visible_deliveries)
CREATE_SCHEMA = {
    "type": "object",
    "required": ["url"],
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "eventTypes": {"type": "array", "items": {"type": "string"}},
        "description": {"type": "string", "maxLength": 300},
    },
}


def endpoint_json(endpoint: EventEndpoint, *, deliveries: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": endpoint.pk,
        "url": endpoint.url,
        "description": endpoint.description,
        "eventTypes": endpoint.event_types,
        "state": endpoint.state,
        "stateReason": endpoint.state_reason or None,
        "lastSuccessAt": endpoint.last_success_at,
        "lastFailureAt": endpoint.last_failure_at,
        "failingSince": endpoint.failing_since,
        "failureStreak": endpoint.failure_streak,
        "backlog": endpoint.backlog(),
        "createdAt": endpoint.created_at,
        "secretRotationOverlapUntil": endpoint.previous_secret_until,
    }
    if deliveries:
        data["deliveries"] = [delivery_json(d) for d in endpoint.deliveries.order_by("-id")[:50]]
    return data


def delivery_json(delivery: EventDelivery) -> dict[str, Any]:
    return {
        "id": delivery.pk,
        "webhookId": delivery.webhook_id,
        "status": delivery.status,
        "events": delivery.event_count,
        "firstEventId": str(delivery.first_event_id),
        "lastEventId": str(delivery.last_event_id),
        "test": delivery.is_test,
        "attempts": delivery.attempts,
        "lastStatusCode": delivery.last_status_code,
        "lastDurationMs": delivery.last_duration_ms,
        "lastResponseExcerpt": delivery.last_response_excerpt or None,
        "lastError": delivery.last_error or None,
        "createdAt": delivery.created_at,
        "deliveredAt": delivery.delivered_at,
    }


def _act(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except EndpointError as exc:
        status = 404 if "There is no" in str(exc) else 400
        field = str(exc).split(":", 1)[0] if status == 400 and ":" in str(exc) else ""
        raise ApiError(
            status,
            "not_found" if status == 404 else "invalid_field",
            str(exc),
            field=field if field in ("url", "eventTypes") else "",
        ) from None


@api_endpoint(
    "/api/event-endpoints",
    "GET",
    "manage_event_endpoints",
    "List event endpoints with their health and backlog.",
)
def endpoint_list(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    endpoints = visible_endpoints(actor).order_by("id")
    return {"endpoints": [endpoint_json(e) for e in endpoints]}


@api_endpoint(
    "/api/event-endpoints",
    "POST",
    "manage_event_endpoints",
    "Create an event endpoint; the answer carries its signing secret, once.",
    request_body=CREATE_SCHEMA,
    responses={"201": "created, with `secret` (shown only now)"},
)
def endpoint_create(request: HttpRequest, actor: Actor, body: dict) -> JsonResponse:
    types = body.get("eventTypes", [])
    if not isinstance(types, list):
        raise ApiError(
            400, "invalid_field", "eventTypes: a list of event types.", field="eventTypes"
        )
    url, description = body.get("url"), body.get("description", "")
    if not isinstance(url, str) or not isinstance(description, str):
        raise ApiError(
            400,
            "invalid_field",
            "url and description are strings.",
            field="url" if not isinstance(url, str) else "description",
        )
    endpoint, secret = _act(create_endpoint, actor, url, types, description)
    response = JsonResponse(
        {**endpoint_json(endpoint), "secret": secret},
        status=201,
        json_dumps_params={"default": str},
    )
    response["Location"] = f"/api/event-endpoints/{endpoint.pk}"
    response["Cache-Control"] = "no-store"
    return response


endpoints_collection = by_method(get=endpoint_list, post=endpoint_create)


@api_endpoint(
    "/api/event-endpoints/{endpointId}",
    "GET",
    "manage_event_endpoints",
    "One endpoint: health, backlog and its 50 latest deliveries.",
    scope=EVENT_ENDPOINT,
)
def endpoint_detail(
    request: HttpRequest, actor: Actor, body: dict, endpoint_id: str
) -> dict[str, Any]:
    return endpoint_json(_act(get_endpoint, actor, endpoint_id), deliveries=True)


@api_endpoint(
    "/api/event-endpoints/{endpointId}/pause",
    "POST",
    "manage_event_endpoints",
    "Pause deliveries (events wait as the backlog).",
    scope=EVENT_ENDPOINT,
)
def endpoint_pause(
    request: HttpRequest, actor: Actor, body: dict, endpoint_id: str
) -> dict[str, Any]:
    reason = body.get("reason", "")
    return endpoint_json(
        _act(pause_endpoint, actor, endpoint_id, reason if isinstance(reason, str) else "")
    )


@api_endpoint(
    "/api/event-endpoints/{endpointId}/resume",
    "POST",
    "manage_event_endpoints",
    "Resume a paused endpoint or re-enable a disabled one (the backlog goes out).",
    scope=EVENT_ENDPOINT,
)
def endpoint_resume(
    request: HttpRequest, actor: Actor, body: dict, endpoint_id: str
) -> dict[str, Any]:
    return endpoint_json(_act(resume_endpoint, actor, endpoint_id))


@api_endpoint(
    "/api/event-endpoints/{endpointId}/rotate-secret",
    "POST",
    "manage_event_endpoints",
    "A new signing secret (shown once); the old one also signs for `overlapHours`.",
    scope=EVENT_ENDPOINT,
    request_body={
        "type": "object",
        "properties": {"overlapHours": {"type": "number", "minimum": 0, "maximum": 336}},
    },
)
def endpoint_rotate(
    request: HttpRequest, actor: Actor, body: dict, endpoint_id: str
) -> JsonResponse:
    overlap = body.get("overlapHours", 24)
    if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not 0 <= overlap <= 336:
        raise ApiError(
            400,
            "invalid_field",
            "overlapHours: a number of hours from 0 to 336.",
            field="overlapHours",
        )
    endpoint, secret = _act(rotate_secret, actor, endpoint_id, float(overlap))
    response = JsonResponse(
        {**endpoint_json(endpoint), "secret": secret}, json_dumps_params={"default": str}
    )
    response["Cache-Control"] = "no-store"
    return response


@api_endpoint(
    "/api/event-endpoints/{endpointId}/test",
    "POST",
    "manage_event_endpoints",
    "Send a test event to the endpoint.",
    scope=EVENT_ENDPOINT,
)
def endpoint_test(
    request: HttpRequest, actor: Actor, body: dict, endpoint_id: str
) -> dict[str, Any]:
    return delivery_json(_act(send_test, actor, endpoint_id))


@api_endpoint(
    "/api/event-endpoints/{endpointId}/replay",
    "POST",
    "manage_event_endpoints",
    "Send again every delivery made since a time (same webhook-ids).",
    scope=EVENT_ENDPOINT,
    request_body={
        "type": "object",
        "required": ["since"],
        "properties": {"since": {"type": "string", "format": "date-time"}},
    },
)
def endpoint_replay(
    request: HttpRequest, actor: Actor, body: dict, endpoint_id: str
) -> dict[str, Any]:
    since = _since(body.get("since"))
    return {"replayed": _act(replay_since, actor, endpoint_id, since)}


@api_endpoint(
    "/api/event-deliveries/{deliveryId}/replay",
    "POST",
    "manage_event_endpoints",
    "Send one delivery again (the same webhook-id and body, a new signature).",
    scope=EVENT_DELIVERY,
    responses={"404": "no such delivery"},
)
def delivery_replay(
    request: HttpRequest, actor: Actor, body: dict, delivery_id: str
) -> dict[str, Any]:
    return delivery_json(_act(replay_delivery, actor, delivery_id))


def _since(raw: Any) -> datetime:
    try:
        value = parse_datetime(raw) if isinstance(raw, str) else None
        # A date-time near year 1 or 9999 may not exist in UTC, where the database keeps it.
        utc = value.astimezone(UTC) if value is not None and value.tzinfo is not None else None
    except (ValueError, OverflowError):  # "9999-99-99", an offset beyond ±24 h
        utc = None
    if utc is None:
        raise ApiError(
            400, "invalid_field", "since: an ISO 8601 date-time with a time zone.", field="since"
        )
    return utc
