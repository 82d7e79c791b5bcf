"""The job handlers' body: send one queued message unless it is sent or cancelled, and record
a failure (the Fleet event message.failed) when it is permanent or out of attempts."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from integrations.microsoft.messaging import mail, steps, teams
from integrations.microsoft.models import OutboundMessage


def deliver(message_id: int, job: Any = None) -> str:
    """The job handlers' body: send the message unless it is already sent."""
    message = OutboundMessage.objects.filter(pk=message_id).first()
    if message is None:
        return "missing"
    if message.status == OutboundMessage.Status.SENT:
        return "already-sent"
    # A conditional update, so a cancel (cancel_message) and this run never both win.
    started = (
        OutboundMessage.objects.filter(pk=message.pk)
        .exclude(status__in=[OutboundMessage.Status.SENT, OutboundMessage.Status.CANCELLED])
        .update(status=OutboundMessage.Status.SENDING, last_attempt_at=timezone.now())
    )
    if not started:
        return "cancelled"
    message.status = OutboundMessage.Status.SENDING
    try:
        if message.channel == OutboundMessage.Channel.MAIL:
            return mail.deliver_mail(message)
        return teams.deliver_teams(message)
    except Exception as exc:
        transient = getattr(exc, "transient", True)
        out_of_attempts = job is not None and job.attempts >= job.max_attempts
        fields: dict[str, Any] = {"last_error": f"{exc}"[:2000], "last_error_at": timezone.now()}
        if not transient or out_of_attempts:
            fields["status"] = OutboundMessage.Status.FAILED
        with transaction.atomic():
            OutboundMessage.objects.filter(pk=message.pk).update(**fields)
            if fields.get("status") == OutboundMessage.Status.FAILED:
                for name, value in fields.items():
                    setattr(message, name, value)
                steps.emit_outcome("message.failed", message)
        raise
