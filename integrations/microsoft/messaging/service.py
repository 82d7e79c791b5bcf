"""The send service: what the JSON API and the console do with outbound messages (send, read,
list, cancel, resend, a test send), over the outbox (outbox.py).

Each function checks the permission of the work it causes and writes the audit event in the
transaction of its effect; it raises the domain errors of errors.py, which the API translates
to 4xx JSON problems and the console to form errors. The Idempotency-Key header is the API's
(portal/api/idempotency.py); the message's one key is derived from it
(OutboundMessage.api_key).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from integrations.microsoft.messaging import outbox, schema
from integrations.microsoft.messaging.errors import InvalidMessage, MessageNotFound
from integrations.microsoft.models import MonitoredUser, OutboundMessage
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record

# The API's status names; the integration's are the same words.
STATUSES = [s.value for s in OutboundMessage.Status]
CHANNELS = {
    "mail": [OutboundMessage.Channel.MAIL],
    "teams": [OutboundMessage.Channel.TEAMS_CHAT, OutboundMessage.Channel.TEAMS_CHANNEL],
}


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


def check_request(body: dict[str, Any]) -> schema.MessageRequest:
    """A POST /api/messages body, checked (schema.py) with its sending mailbox."""
    request = schema.from_json(body)
    sender = request.fields.get("sender", "")
    if request.channel == "mail" and not known_sender(sender):
        raise InvalidMessage(
            "from",
            f"{sender} is not a mailbox this portal sends from (a monitored "
            "user or one of MESSAGING_SENDER_MAILBOXES).",
        )
    return request


def _queue(
    request: schema.MessageRequest,
    *,
    key: str | None,
    created_by: str,
    correlation_id: str = "",
    resend_of: OutboundMessage | None = None,
) -> OutboundMessage:
    fields = dict(request.fields)
    common: dict[str, Any] = {
        "idempotency_key": key,
        "created_by": created_by,
        "correlation_id": correlation_id,
        "resend_of": resend_of,
    }
    if request.channel == "mail":
        return outbox.send_mail(
            fields.pop("sender"),
            fields.pop("to"),
            fields.pop("subject"),
            fields.pop("body"),
            **fields,
            **common,
        )
    return outbox.send_teams_message(fields.pop("body"), **fields, **common)


def principal_label(actor: Actor) -> str:
    """What created_by says: people by username, service clients as client:<name>."""
    return actor.client.actor_name if actor.client is not None else actor.name


def send(
    actor: Actor,
    request: schema.MessageRequest,
    *,
    key: str,
    client_key: str = "",
    key_claimed: bool = False,
) -> OutboundMessage:
    """Queue a checked request once under the message's `key`, audited (`client_key`: the
    key the client gave, for the audit row).

    `key_claimed`: the caller holds a fresh claim of the key (the API's Idempotency-Key
    record), so a committed message that still holds it was sent under an earlier use that
    expired, and the key now names a new message. (A request still running under the key
    has not committed its message: the insert waits for it and returns that message.)
    """
    require(actor, "send_messages", action="message.send", target_type="outbound_message")
    with transaction.atomic():
        if key_claimed:
            outbox.retire_key(key)
        message = _queue(
            request, key=key, created_by=principal_label(actor), correlation_id=actor.request_id
        )
        record(
            "message.send",
            actor=actor,
            target_type="outbound_message",
            target_id=message.pk,
            params={
                "channel": message.channel,
                "idempotency_key": client_key,
                "to": message.to_recipients[:20],
                "chat_id": message.chat_id,
                "to_user": message.to_user,
                "team_id": message.team_id,
                "channel_id": message.channel_id,
                "sender": message.sender,
            },
        )
    return message


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
        raise MessageNotFound(f"There is no message {message_id}.") from None


def cancel(actor: Actor, message_id: Any) -> OutboundMessage:
    """Cancel a message not sent yet (NotCancellable says why not)."""
    require(
        actor,
        "send_messages",
        action="message.cancel",
        target_type="outbound_message",
        target_id=message_id,
    )
    message = get_message(actor, message_id)
    with transaction.atomic():
        message = outbox.cancel_message(message.pk)
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
        request = schema.MessageRequest(
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
        request = schema.MessageRequest(
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
            key=None,
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


def send_test_message(
    actor: Any,
    *,
    channel: str,
    sender: str = "",
    to: str = "",
    chat_id: str = "",
    team_id: str = "",
    channel_id: str = "",
    text: str = "",
) -> OutboundMessage:
    """Queue a test e-mail or Teams message (console and `send_test_message`), audited.

    Requires `verify_integration`: a test send is part of checking the integration.
    """

    require(actor, "verify_integration", action="message.send_test", target_type="message")
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S %Z")
    text = text or f"Fleet Graph Portal test message ({stamp})"
    with transaction.atomic():
        if channel == "mail":
            message = outbox.send_mail(
                sender, [to], f"Fleet Graph Portal test ({stamp})", text, created_by=actor.name
            )
        else:
            message = outbox.send_teams_message(
                text, chat_id=chat_id, team_id=team_id, channel_id=channel_id, created_by=actor.name
            )
        record(
            "message.send_test",
            actor=actor,
            target_type="outbound_message",
            target_id=message.pk,
            params={
                "channel": message.channel,
                "sender": sender,
                "to": to,
                "chat_id": chat_id,
                "team_id": team_id,
                "channel_id": channel_id,
            },
        )
    return message
