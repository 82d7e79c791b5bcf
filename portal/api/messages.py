"""The send API's service layer: validate a send request, queue it through the integration's
outbound jobs (exactly once to Graph), read, list, cancel and resend messages.

Entry points (the JSON API, console pages) call these; each checks the permission of the
work it causes and writes the audit event in the transaction of its effect.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import Q, QuerySet

from integrations.microsoft import messaging
from integrations.microsoft.models import MonitoredUser, OutboundMessage
from portal.access.actors import Actor
from portal.access.authz import require
from portal.api import idempotency
from portal.api.framework import ApiError
from portal.api.models import IdempotencyRecord
from portal.audit.services import record

MAX_RECIPIENTS = 500  # Exchange Online's per-message recipient limit
MAIL_BODY_LIMIT = 4 * 1024 * 1024  # Graph: a message of up to 4 MB in one request
TEAMS_BODY_LIMIT = 28 * 1024  # Graph: a chatMessage of about 28 KB
SUBJECT_LIMIT = 400
MAX_REQUEST_BYTES = MAIL_BODY_LIMIT + 512 * 1024  # the body plus JSON escaping and headers
SEND_ENDPOINT = "POST /api/messages"

MAIL_FIELDS = {"channel", "from", "to", "cc", "bcc", "subject", "body", "contentType", "importance"}
TEAMS_FIELDS = {"channel", "chatId", "toUser", "teamId", "channelId", "body", "contentType"}
# The API's status names; the integration's are the same words.
STATUSES = [s.value for s in OutboundMessage.Status]
CHANNELS = {
    "mail": [OutboundMessage.Channel.MAIL],
    "teams": [OutboundMessage.Channel.TEAMS_CHAT, OutboundMessage.Channel.TEAMS_CHANNEL],
}


def _bad(field: str, detail: str) -> ApiError:
    return ApiError(400, "invalid_field", f"{field}: {detail}", field=field)


def _string(body: dict[str, Any], name: str, *, required: bool = False, limit: int = 0) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise _bad(name, "is required.")
        return ""
    if not isinstance(value, str):
        raise _bad(name, "must be a string.")
    if required and not value.strip():
        raise _bad(name, "must not be empty.")
    if limit and len(value.encode("utf-8")) > limit:
        raise _bad(name, f"is over the limit of {limit} bytes.")
    return value


def _choice(body: dict[str, Any], name: str, choices: tuple[str, ...]) -> str:
    value = body.get(name, choices[0])
    if value not in choices:
        raise _bad(name, f"must be one of {', '.join(choices)}.")
    return value


def _address(field: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(field, "must be an e-mail address string.")
    try:
        validate_email(value.strip())
    except ValidationError:
        raise _bad(field, f"{value[:80]!r} is not an e-mail address.") from None
    return value.strip()


def _addresses(body: dict[str, Any], name: str) -> list[str]:
    value = body.get(name, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(name, "must be a list of e-mail addresses.")
    return [_address(f"{name}[{i}]", item) for i, item in enumerate(value)]


def known_sender(mailbox: str) -> bool:
    """May the API send from this mailbox? Monitored users and MESSAGING_SENDER_MAILBOXES."""
    lowered = mailbox.lower()
    if lowered in settings.MESSAGING_SENDER_MAILBOXES:
        return True
    return (
        MonitoredUser.objects.filter(is_active=True)
        .filter(Q(identifier__iexact=mailbox) | Q(upn__iexact=mailbox))
        .exists()
    )


def _reject_unknown(body: dict[str, Any], allowed: set[str]) -> None:
    for name in sorted(body):
        if name not in allowed:
            raise _bad(name, "is not a field of this channel's messages.")


@dataclass(frozen=True)
class SendRequest:
    channel: str  # "mail" or "teams"
    fields: dict[str, Any]  # keyword arguments for messaging.send_mail/send_teams_message


def parse_send(body: dict[str, Any]) -> SendRequest:
    """Validate a POST /api/messages body; a 400 names the first field at fault."""
    channel = body.get("channel")
    if channel not in ("mail", "teams"):
        raise _bad("channel", "must be 'mail' or 'teams'.")
    content_type = _choice(body, "contentType", ("text", "html"))
    if channel == "mail":
        _reject_unknown(body, MAIL_FIELDS)
        sender = _address("from", body.get("from")) if body.get("from") is not None else ""
        if not sender:
            raise _bad("from", "is required (the sending mailbox's UPN).")
        if not known_sender(sender):
            raise _bad(
                "from",
                f"{sender} is not a mailbox this portal sends from (a monitored "
                "user or one of MESSAGING_SENDER_MAILBOXES).",
            )
        to, cc, bcc = (_addresses(body, name) for name in ("to", "cc", "bcc"))
        if not (to or cc or bcc):
            raise _bad("to", "give at least one recipient (to, cc or bcc).")
        if len(to) + len(cc) + len(bcc) > MAX_RECIPIENTS:
            raise _bad("to", f"more than {MAX_RECIPIENTS} recipients in to, cc and bcc.")
        return SendRequest(
            "mail",
            {
                "sender": sender,
                "to": to,
                "cc": cc,
                "bcc": bcc,
                "subject": _string(body, "subject", limit=SUBJECT_LIMIT),
                "body": _string(body, "body", required=True, limit=MAIL_BODY_LIMIT),
                "content_type": content_type,
                "importance": _choice(body, "importance", ("normal", "high")),
            },
        )
    _reject_unknown(body, TEAMS_FIELDS)
    chat_id, to_user = _string(body, "chatId", limit=255), _string(body, "toUser", limit=255)
    team_id, channel_id = _string(body, "teamId", limit=64), _string(body, "channelId", limit=255)
    targets = [bool(chat_id), bool(to_user), bool(team_id or channel_id)]
    if sum(targets) != 1:
        raise _bad("chatId", "give exactly one target: chatId, toUser, or teamId with channelId.")
    if (team_id or channel_id) and not (team_id and channel_id):
        raise _bad("channelId" if team_id else "teamId", "teamId and channelId go together.")
    if to_user:
        to_user = _address("toUser", to_user)
    return SendRequest(
        "teams",
        {
            "chat_id": chat_id,
            "to_user": to_user,
            "team_id": team_id,
            "channel_id": channel_id,
            "body": _string(body, "body", required=True, limit=TEAMS_BODY_LIMIT),
            "content_type": content_type,
        },
    )


def _queue(
    request: SendRequest,
    *,
    key: str,
    created_by: str,
    correlation_id: str = "",
    resend_of: OutboundMessage | None = None,
) -> OutboundMessage:
    fields = dict(request.fields)
    if request.channel == "mail":
        sender = fields.pop("sender")
        to = fields.pop("to")
        subject = fields.pop("subject")
        body = fields.pop("body")
        return messaging.send_mail(
            sender,
            to,
            subject,
            body,
            idempotency_key=key,
            created_by=created_by,
            correlation_id=correlation_id,
            resend_of=resend_of,
            **fields,
        )
    body = fields.pop("body")
    return messaging.send_teams_message(
        body,
        idempotency_key=key,
        created_by=created_by,
        correlation_id=correlation_id,
        resend_of=resend_of,
        **fields,
    )


def principal_label(actor: Actor) -> str:
    """What created_by says: people by username, service clients as client:<name>."""
    return actor.client.actor_name if actor.client is not None else actor.name


@dataclass(frozen=True)
class SendResult:
    message: OutboundMessage
    status: int  # 202 the first time; a replay answers what the first request answered
    replayed: bool


def send(actor: Actor, body: dict[str, Any], key: str) -> SendResult:
    """POST /api/messages: validate, claim the idempotency key, queue once, audit."""
    require(actor, "send_messages", action="message.send", target_type="outbound_message")
    request = parse_send(body)
    claim = idempotency.claim(actor, SEND_ENDPOINT, key, body)
    if claim.replay:
        # A replayed claim is a DONE record, and complete() made it DONE with the message's id.
        assert claim.record.resource_id is not None
        message = OutboundMessage.objects.get(pk=claim.record.resource_id)
        return SendResult(message, claim.record.response_status or 202, replayed=True)
    try:
        with transaction.atomic():
            # The record's id namespaces the integration's own key: a key reused after it
            # expired makes a new message, a retry of the same request never does.
            message = _queue(
                request,
                key=f"api-{claim.record.pk}",
                created_by=principal_label(actor),
                correlation_id=actor.request_id,
            )
            idempotency.complete(claim.record, 202, message.pk)
            record(
                "message.send",
                actor=actor,
                target_type="outbound_message",
                target_id=message.pk,
                params={
                    "channel": message.channel,
                    "idempotency_key": key,
                    "to": message.to_recipients[:20],
                    "chat_id": message.chat_id,
                    "to_user": message.to_user,
                    "team_id": message.team_id,
                    "channel_id": message.channel_id,
                    "sender": message.sender,
                },
            )
    except ValueError as exc:
        idempotency.release(claim.record)
        raise ApiError(400, "invalid_request", str(exc)) from None
    except BaseException:
        idempotency.release(claim.record)
        raise
    return SendResult(message, 202, replayed=False)


def visible_messages(actor: Actor) -> QuerySet[OutboundMessage]:
    """Service clients see the messages they sent; people see all of them."""
    queryset = OutboundMessage.objects.select_related("job")
    if actor.client is not None:
        queryset = queryset.filter(created_by=actor.client.actor_name)
    return queryset


def get_message(actor: Actor, message_id: Any) -> OutboundMessage:
    try:
        return visible_messages(actor).get(pk=int(message_id))
    except (OutboundMessage.DoesNotExist, TypeError, ValueError):
        raise ApiError(404, "not_found", f"There is no message {message_id}.") from None


def cancel(actor: Actor, message_id: Any) -> OutboundMessage:
    require(
        actor,
        "send_messages",
        action="message.cancel",
        target_type="outbound_message",
        target_id=message_id,
    )
    message = get_message(actor, message_id)
    with transaction.atomic():
        try:
            message = messaging.cancel_message(message.pk)
        except messaging.NotCancellable as exc:
            raise ApiError(409, "not_cancellable", str(exc)) from None
        record(
            "message.cancel",
            actor=actor,
            target_type="outbound_message",
            target_id=message.pk,
            params={"channel": message.channel},
        )
    return message


def resend(actor: Actor, message_id: Any) -> OutboundMessage:
    """Queue a new message with the same content, linked to the original (console)."""
    require(
        actor,
        "send_messages",
        action="message.resend",
        target_type="outbound_message",
        target_id=message_id,
    )
    original = get_message(actor, message_id)
    if original.channel == OutboundMessage.Channel.MAIL:
        request = SendRequest(
            "mail",
            {
                "sender": original.sender,
                "to": original.to_recipients,
                "cc": original.cc_recipients,
                "bcc": original.bcc_recipients,
                "subject": original.subject,
                "body": original.body,
                "content_type": original.content_type,
                "importance": original.importance,
            },
        )
    else:
        request = SendRequest(
            "teams",
            {
                "chat_id": original.chat_id,
                "to_user": "" if original.chat_id else original.to_user,
                "team_id": original.team_id,
                "channel_id": original.channel_id,
                "body": original.body,
                "content_type": original.content_type,
            },
        )
    with transaction.atomic():
        message = _queue(
            request,
            key="",
            created_by=principal_label(actor),
            correlation_id=actor.request_id,
            resend_of=original,
        )
        record(
            "message.resend",
            actor=actor,
            target_type="outbound_message",
            target_id=message.pk,
            params={"resend_of": original.pk},
        )
    return message


def api_key_of(message: OutboundMessage) -> str | None:
    """The client's Idempotency-Key for a message sent through the API."""
    return (
        IdempotencyRecord.objects.filter(resource_id=message.pk, endpoint=SEND_ENDPOINT)
        .values_list("key", flat=True)
        .first()
    )


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
