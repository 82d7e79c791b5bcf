"""What every delivery step shares: the Graph call, committing a step to the row at once,
and recording the outcome (status, the Fleet event) in one transaction."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from integrations import graph
from integrations.microsoft.models import OutboundMessage
from portal.events.services import emit


def call(
    method: str, path: str, *, repeatable: bool | None = None, **kwargs: Any
) -> graph.GraphResponse:
    """Every Graph request of a send, through the client's one retry loop (graph.request).

    The posts and sends themselves pass `repeatable=False`: after a 429, a 5xx or a timeout
    Graph may have acted on them, so they are never repeated blindly; the job comes back and
    the recovery path looks for the message's tag (mail) or its post (Teams) first.
    """
    return graph.request(method, path, repeatable=repeatable, **kwargs)


def note(message: OutboundMessage, **fields: Any) -> None:
    """Commit a change to the row at once (the next step may crash the worker)."""
    OutboundMessage.objects.filter(pk=message.pk).update(**fields)
    for name, value in fields.items():
        setattr(message, name, value)


def mark_sent(message: OutboundMessage, graph_id: str, internet_message_id: str = "") -> str:
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": OutboundMessage.Status.SENT,
        "step": OutboundMessage.Step.DONE,
        "sent_at": now,
        "last_error": "",
    }
    if graph_id and not message.graph_message_id:
        fields["graph_message_id"] = graph_id[:255]
    if internet_message_id and not message.internet_message_id:
        fields["internet_message_id"] = internet_message_id[:255]
    with transaction.atomic():
        note(message, **fields)
        emit_outcome("message.sent", message)
    return "sent"


def emit_outcome(event_type: str, message: OutboundMessage) -> None:
    """message.sent / message.failed, in the transaction that records the outcome."""
    emit(
        event_type,
        {
            "message": message.pk,
            "channel": "mail" if message.channel == "mail" else "teams",
            "status": message.status,
            "createdBy": message.created_by,
            "graphMessageId": message.graph_message_id or None,
            "internetMessageId": message.internet_message_id or None,
            "chatId": message.chat_id or None,
            "error": message.last_error or None,
            "links": {"message": f"/api/messages/{message.pk}"},
        },
        subject=f"message:{message.pk}",
    )
