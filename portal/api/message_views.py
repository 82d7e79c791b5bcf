"""The send API: POST /api/messages (Idempotency-Key required), read, list, cancel."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from portal.access.actors import Actor
from portal.api import idempotency
from portal.api import messages as service
from portal.api.framework import ApiError, Owned, api_endpoint, by_method
from portal.api.views import int_param

MAX_PAGE = 200
MESSAGE = Owned("message", "message_id", service.visible_messages)
SEND_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "required": ["channel", "from", "body"],
            "properties": {
                "channel": {"const": "mail"},
                "from": {"type": "string", "format": "email"},
                "to": {"type": "array", "items": {"type": "string", "format": "email"}},
                "cc": {"type": "array", "items": {"type": "string", "format": "email"}},
                "bcc": {"type": "array", "items": {"type": "string", "format": "email"}},
                "subject": {"type": "string", "maxLength": service.SUBJECT_LIMIT},
                "body": {"type": "string"},
                "contentType": {"enum": ["text", "html"]},
                "importance": {"enum": ["normal", "high"]},
            },
        },
        {
            "type": "object",
            "required": ["channel", "body"],
            "properties": {
                "channel": {"const": "teams"},
                "chatId": {"type": "string"},
                "toUser": {"type": "string", "format": "email"},
                "teamId": {"type": "string"},
                "channelId": {"type": "string"},
                "body": {"type": "string"},
                "contentType": {"enum": ["text", "html"]},
            },
        },
    ],
}


def _resource(message: Any, actor: Actor, status: int, replayed: bool = False) -> JsonResponse:
    response = JsonResponse(
        service.message_json(message, actor), status=status, json_dumps_params={"default": str}
    )
    response["Location"] = f"/api/messages/{message.pk}"
    if replayed:
        response["Idempotent-Replayed"] = "true"
    return response


@api_endpoint(
    "/api/messages",
    "POST",
    "send_messages",
    "Send an e-mail or a Teams message (queued; sent exactly once).",
    request_body=SEND_SCHEMA,
    max_body_bytes=service.MAX_REQUEST_BYTES,
    headers={
        idempotency.HEADER: "required; the same key and body return the "
        "first answer, another body is 422, a concurrent duplicate 409; "
        "kept at least 24 h per client"
    },
    responses={
        "202": "queued: the message, with a Location header",
        "409": "a request with this key is still being processed",
        "413": "the request is too large",
        "422": "this key was used with a different body",
    },
)
def send_message(request: HttpRequest, actor: Actor, body: dict) -> JsonResponse:
    key = idempotency.key_from(request)
    result = service.send(actor, body, key)
    return _resource(result.message, actor, result.status, result.replayed)


@api_endpoint(
    "/api/messages",
    "GET",
    "view_messages",
    "List messages (a service client sees its own), oldest first, cursor-paged.",
    query={
        "status": "queued|sending|sent|failed|cancelled",
        "channel": "mail|teams",
        "after": "the cursor from nextCursor",
        "limit": "1-200 (default 50)",
    },
)
def list_messages(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    queryset = service.visible_messages(actor)
    status = request.GET.get("status")
    if status:
        if status not in service.STATUSES:
            raise ApiError(
                400,
                "invalid_parameter",
                f"status must be one of {', '.join(service.STATUSES)}.",
                field="status",
            )
        queryset = queryset.filter(status=status)
    channel = request.GET.get("channel")
    if channel:
        if channel not in service.CHANNELS:
            raise ApiError(
                400, "invalid_parameter", "channel must be mail or teams.", field="channel"
            )
        queryset = queryset.filter(channel__in=service.CHANNELS[channel])
    after = int_param(request, "after", None, minimum=0)
    limit = int_param(request, "limit", 50, maximum=MAX_PAGE) or 50
    if after is not None:
        queryset = queryset.filter(pk__gt=after)
    page = list(queryset.order_by("id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return {
        "messages": [service.message_json(m, actor) for m in page],
        "nextCursor": str(page[-1].pk) if more else None,
    }


messages_collection = by_method(get=list_messages, post=send_message)


@api_endpoint(
    "/api/messages/{messageId}",
    "GET",
    "view_messages",
    "One message: status, attempts, last error, Graph ids, timestamps.",
    responses={"404": "no such message (or not this client's)"},
    scope=MESSAGE,
)
def message_detail(
    request: HttpRequest, actor: Actor, body: dict, message_id: str
) -> dict[str, Any]:
    return service.message_json(service.get_message(actor, message_id), actor)


@api_endpoint(
    "/api/messages/{messageId}/cancel",
    "POST",
    "send_messages",
    "Cancel a message that has not been sent yet.",
    responses={"404": "no such message", "409": "sent, being sent, or possibly sent already"},
    scope=MESSAGE,
)
def message_cancel(
    request: HttpRequest, actor: Actor, body: dict, message_id: str
) -> dict[str, Any]:
    return service.message_json(service.cancel(actor, message_id), actor)
