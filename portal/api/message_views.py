"""The send API: POST /api/messages (Idempotency-Key required), read, list, cancel.

Thin over the send service (integrations/microsoft/messaging/service.py): the request body's
schema is the service's (schema.json_schema()), its refusals become 4xx JSON problems here.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from integrations.microsoft.messaging import schema, service
from integrations.microsoft.messaging.errors import (
    InvalidMessage,
    MessageNotFound,
    MessagingError,
    NotCancellable,
)
from integrations.microsoft.models import OutboundMessage
from portal.access.actors import Actor
from portal.api import idempotency
from portal.api.framework import ApiError, Owned, api_endpoint, by_method
from portal.api.views import int_param

MAX_PAGE = 200
MESSAGE = Owned("message", "message_id", service.visible_messages)
# The body plus JSON escaping and headers.
MAX_REQUEST_BYTES = schema.MAIL_BODY_LIMIT + 512 * 1024
# The send service's refusals as HTTP answers (their code and reason are the JSON's).
STATUS_OF = {InvalidMessage: 400, MessageNotFound: 404, NotCancellable: 409}


def problem(exc: MessagingError) -> ApiError:
    """A domain error as the API's JSON problem."""
    return ApiError(STATUS_OF.get(type(exc), 400), exc.code, exc.reason, field=exc.field)


def _resource(
    message: OutboundMessage, actor: Actor, status: int, replayed: bool = False
) -> JsonResponse:
    response = JsonResponse(
        message_json(message, actor), status=status, json_dumps_params={"default": str}
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
    request_body=schema.json_schema(),
    max_body_bytes=MAX_REQUEST_BYTES,
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
    try:
        checked = service.check_request(body)
        # The message's key is the client's, scoped to the principal: a retry of the same
        # request never sends again, a key reused after it expired names a new message.
        answer = idempotency.once(
            actor,
            idempotency.SEND_ENDPOINT,
            key,
            body,
            lambda: (
                service.send(
                    actor,
                    checked,
                    key=OutboundMessage.api_key(idempotency.owner_of(actor), key),
                    client_key=key,
                    key_claimed=True,
                ).pk
            ),
        )
    except MessagingError as exc:
        raise problem(exc) from None
    message = OutboundMessage.objects.get(pk=answer.resource_id)
    return _resource(message, actor, answer.status, answer.replayed)


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
        "messages": [message_json(m, actor) for m in page],
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
    try:
        return message_json(service.get_message(actor, message_id), actor)
    except MessagingError as exc:
        raise problem(exc) from None


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
    try:
        return message_json(service.cancel(actor, message_id), actor)
    except MessagingError as exc:
        raise problem(exc) from None


def message_json(message: OutboundMessage, actor: Actor) -> dict[str, Any]:
    """The message resource. Subject and text only for those who may read them."""
    job = message.job
    data: dict[str, Any] = {
        "id": message.pk,
        "channel": "mail" if message.channel == OutboundMessage.Channel.MAIL else "teams",
        "status": message.status,
        "attempts": job.runs if job is not None else 0,
        "lastError": message.last_error or None,
        "createdAt": message.created_at,
        "lastAttemptAt": message.last_attempt_at,
        "sentAt": message.sent_at,
        "createdBy": message.created_by,
        "resendOf": message.resend_of_id,
        "graph": {
            "messageId": message.graph_message_id or None,
            "draftId": message.graph_draft_id or None,
            "internetMessageId": message.internet_message_id or None,
        },
        "links": {"self": f"/api/messages/{message.pk}"},
    }
    if message.channel == OutboundMessage.Channel.MAIL:
        data.update(
            {
                "from": message.sender,
                "to": message.to_recipients,
                "cc": message.cc_recipients,
                "bcc": message.bcc_recipients,
                "contentType": message.content_type,
                "importance": message.importance,
            }
        )
    else:
        data.update(
            {
                "chatId": message.chat_id or None,
                "toUser": message.to_user or None,
                "teamId": message.team_id or None,
                "channelId": message.channel_id or None,
                "contentType": message.content_type,
            }
        )
    if actor.can("view_message_bodies"):
        data["body"] = message.body
        if message.channel == OutboundMessage.Channel.MAIL:
            data["subject"] = message.subject
    return data
