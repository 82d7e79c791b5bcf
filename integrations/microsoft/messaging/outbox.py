"""Queueing outbound messages: `send_mail()` and `send_teams_message()` check the message
(schema.py), create an OutboundMessage and its job in one transaction (the job layer's
outbox), under the message's one idempotency key: calling them again with the same key
returns the first message instead of sending another. `cancel_message()` takes back one
not sent yet.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.microsoft.messaging import schema
from integrations.microsoft.messaging.errors import InvalidMessage, NotCancellable
from integrations.microsoft.models import OutboundMessage
from portal.jobs.models import Job
from portal.jobs.runner import enqueue

MAIL_JOB = "graph.send_mail"
TEAMS_JOB = "graph.send_teams"
KEY_LIMIT = 400  # the column; an API key is at most 4 + 64 + 1 + 255 characters


def _key(idempotency_key: str | None) -> str:
    """The message's one key: the caller's, or a new one."""
    if not idempotency_key:
        return uuid.uuid4().hex
    if len(idempotency_key) > KEY_LIMIT:
        raise InvalidMessage("idempotency key", f"is longer than {KEY_LIMIT} characters.")
    return idempotency_key


def retire_key(key: str) -> None:
    """Free an API send's key whose use has expired, so that it names a new message: the old
    message keeps it as a retired key (and keeps its Graph tag)."""
    for pk in OutboundMessage.objects.filter(idempotency_key=key).values_list("pk", flat=True):
        OutboundMessage.objects.filter(pk=pk).update(
            idempotency_key=OutboundMessage.retired_api_key(key, pk)
        )


def _create(
    channel: str,
    job_type: str,
    fields: dict[str, Any],
    *,
    idempotency_key: str | None,
    created_by: str,
    correlation_id: str,
) -> OutboundMessage:
    key = _key(idempotency_key)
    with transaction.atomic():
        existing = OutboundMessage.objects.filter(idempotency_key=key).first()
        if existing is not None:
            return existing
        try:
            with transaction.atomic():
                message = OutboundMessage.objects.create(
                    channel=channel,
                    idempotency_key=key,
                    created_by=created_by[:150],
                    correlation_id=correlation_id[:64],
                    **fields,
                )
        except IntegrityError:
            return OutboundMessage.objects.get(idempotency_key=key)
        # No key of its own: the message's unique key already makes this its only job.
        job = enqueue(
            job_type,
            {"message": message.pk},
            created_by=created_by,
            correlation_id=correlation_id,
        )
        OutboundMessage.objects.filter(pk=message.pk).update(job=job)
        message.job = job
    return message


def send_mail(
    sender: str,
    to: str | Iterable[str],
    subject: str,
    body: str,
    *,
    cc: str | Iterable[str] | None = None,
    bcc: str | Iterable[str] | None = None,
    content_type: str = "text",
    importance: str = "normal",
    idempotency_key: str | None = None,
    created_by: str = "",
    correlation_id: str = "",
    resend_of: OutboundMessage | None = None,
) -> OutboundMessage:
    """Queue an e-mail from mailbox `sender` (its address; one form per mailbox: it is
    also the budget key). Works inside the caller's transaction. InvalidMessage if the
    message breaks a rule of schema.py."""
    fields = schema.check_mail(
        {
            "sender": sender,
            "to": schema.addresses(to),
            "cc": schema.addresses(cc),
            "bcc": schema.addresses(bcc),
            "subject": subject,
            "body": body,
            "content_type": content_type,
            "importance": importance,
        }
    )
    return _create(
        OutboundMessage.Channel.MAIL,
        MAIL_JOB,
        {
            "sender": fields["sender"],
            "to_recipients": fields["to"],
            "cc_recipients": fields["cc"],
            "bcc_recipients": fields["bcc"],
            "subject": fields["subject"],
            "body": fields["body"],
            "content_type": fields["content_type"],
            "importance": fields["importance"],
            "resend_of": resend_of,
        },
        idempotency_key=idempotency_key,
        created_by=created_by,
        correlation_id=correlation_id,
    )


def send_teams_message(
    body: str,
    *,
    chat_id: str = "",
    team_id: str = "",
    channel_id: str = "",
    to_user: str = "",
    content_type: str = "text",
    idempotency_key: str | None = None,
    created_by: str = "",
    correlation_id: str = "",
    resend_of: OutboundMessage | None = None,
) -> OutboundMessage:
    """Queue a Teams message to a chat (`chat_id`), a user's 1:1 chat with the sender account
    (`to_user`, found or created when it is sent) or a channel (`team_id` + `channel_id`).
    InvalidMessage if the message breaks a rule of schema.py."""
    fields = schema.check_teams(
        {
            "body": body,
            "chat_id": chat_id,
            "to_user": to_user,
            "team_id": team_id,
            "channel_id": channel_id,
            "content_type": content_type,
        }
    )
    channel = (
        OutboundMessage.Channel.TEAMS_CHANNEL
        if fields["team_id"]
        else OutboundMessage.Channel.TEAMS_CHAT
    )
    return _create(
        channel,
        TEAMS_JOB,
        {**fields, "resend_of": resend_of},
        idempotency_key=idempotency_key,
        created_by=created_by,
        correlation_id=correlation_id,
    )


CANCELLABLE_STEPS = (
    OutboundMessage.Step.NONE,
    OutboundMessage.Step.DRAFT_REQUESTED,
    OutboundMessage.Step.DRAFT_CREATED,
)


def cancel_message(message_id: int) -> OutboundMessage:
    """Cancel a message that cannot have been sent yet, and its job, in the caller's
    transaction. A run in progress, or a step after which Graph may have sent it, refuses."""

    with transaction.atomic():
        message = OutboundMessage.objects.select_for_update().get(pk=message_id)
        job = (
            Job.objects.select_for_update().filter(pk=message.job_id).first()
            if message.job_id is not None
            else None
        )
        if message.status in (OutboundMessage.Status.SENT, OutboundMessage.Status.CANCELLED):
            raise NotCancellable(f"Message {message.pk} is already {message.status}.")
        if job is not None and job.status == Job.Status.RUNNING:
            raise NotCancellable(f"Message {message.pk} is being sent right now.")
        if message.step not in CANCELLABLE_STEPS:
            raise NotCancellable(
                f"Message {message.pk} may already have reached Graph "
                f"({message.get_step_display().lower()}); it cannot be "
                "cancelled."
            )
        OutboundMessage.objects.filter(pk=message.pk).update(
            status=OutboundMessage.Status.CANCELLED
        )
        if job is not None and job.status != Job.Status.SUCCEEDED:
            Job.objects.filter(pk=job.pk).update(
                status=Job.Status.CANCELLED, finished_at=timezone.now(), next_attempt_at=None
            )
        message.status = OutboundMessage.Status.CANCELLED
    return message
