"""Sending one queued e-mail (the job `graph.send_mail`; Microsoft Learn: "Send mail").

The message is created as a *draft* tagged with the message's `graph_tag` in a single-value
extended property, then the draft is sent (`POST …/messages/{id}/send`). Before each step
with a side effect the row's `step` is committed, so a run after a crash knows what may have
happened and asks Graph first:

- a message with the tag that is no longer a draft → it was sent: done, nothing is sent;
- a tagged draft → send that draft (after MESSAGING_SEND_SETTLE_SECONDS when a send of it
  had already been requested: Exchange keeps a just-sent draft visible for a moment);
- nothing → create the draft (again).
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from integrations.graph import throttle
from integrations.graph.errors import GraphError
from integrations.microsoft.messaging import budgets, steps
from integrations.microsoft.models import OutboundMessage
from portal.jobs.errors import PermanentJobError, TransientJobError

logger = logging.getLogger(__name__)

# A named MAPI property in our own namespace (GUID made for this portal) carries the tag.
TAG_PROPERTY_ID = "String {6f1c2a8e-4b7d-4e55-9a3c-2d8e5b1f7c40} Name FleetPortalSendKey"


def _recipients(addresses: list[str]) -> list[dict[str, Any]]:
    return [{"emailAddress": {"address": address}} for address in addresses]


def _tagged(message: OutboundMessage, base: str) -> list[dict[str, Any]]:
    flt = (
        f"singleValueExtendedProperties/Any(ep: ep/id eq '{TAG_PROPERTY_ID}' and "
        f"ep/value eq '{message.graph_tag}')"
    )
    response = steps.call(
        "GET",
        f"{base}/messages",
        mailbox=message.sender,
        params={
            "$filter": flt,
            "$top": "10",
            "$select": "id,isDraft,internetMessageId,createdDateTime",
        },
        headers={"Prefer": 'IdType="ImmutableId"'},
    )
    return list((response.body or {}).get("value", []))


def deliver_mail(message: OutboundMessage) -> str:
    """Send one queued e-mail; safe to run again after a crash at any point."""
    base = f"/users/{message.sender}"
    # The sender's mailbox: its gate, 429 window and send slots (one key per mailbox).
    key = throttle.mailbox_key(message.sender)
    step = message.step
    draft_id = ""
    if step in (
        OutboundMessage.Step.DRAFT_REQUESTED,
        OutboundMessage.Step.DRAFT_CREATED,
        OutboundMessage.Step.SEND_REQUESTED,
    ):
        found = _tagged(message, base)
        sent = [m for m in found if not m.get("isDraft")]
        drafts = sorted(
            (m for m in found if m.get("isDraft")),
            key=lambda m: str(m.get("createdDateTime") or ""),
        )
        if sent:
            logger.info("Outbound message %s was already sent; not sending again", message.pk)
            return steps.mark_sent(
                message,
                message.graph_message_id or sent[0]["id"],
                sent[0].get("internetMessageId", ""),
            )
        if drafts:
            if step == OutboundMessage.Step.SEND_REQUESTED and message.step_at:
                # The send may be under way (Exchange shows a just-sent draft for a moment).
                settle = budgets.send_settle_seconds()
                age = (timezone.now() - message.step_at).total_seconds()
                if age < settle:
                    raise TransientJobError(
                        "A send of this draft was requested and its outcome is not known "
                        "yet; checking again shortly",
                        retry_after=settle - age,
                    )
            draft_id = drafts[0]["id"]
            for extra in drafts[1:]:  # a second draft can only come from a lagging search
                steps.call("DELETE", f"{base}/messages/{extra['id']}", mailbox=message.sender)
            steps.note(
                message,
                step=OutboundMessage.Step.DRAFT_CREATED,
                graph_draft_id=draft_id,
                internet_message_id=drafts[0].get("internetMessageId", "")[:255],
            )
        elif step == OutboundMessage.Step.SEND_REQUESTED and message.step_at:
            age = (timezone.now() - message.step_at).total_seconds()
            if age < 10 * budgets.send_settle_seconds():
                raise TransientJobError(
                    "The draft was sent or is being sent, but no sent item is visible yet; "
                    "checking again shortly",
                    retry_after=budgets.send_settle_seconds(),
                )
            raise PermanentJobError(
                f"Sending state unknown: the tagged draft of this message is gone from "
                f"{message.sender} and no sent item carries its tag. Check the mailbox's Sent "
                f"Items before sending it again."
            )
    if not draft_id:
        steps.note(message, step=OutboundMessage.Step.DRAFT_REQUESTED, step_at=timezone.now())
        draft = (
            steps.call(
                "POST",
                f"{base}/messages",
                repeatable=False,  # a second draft is not a second send, but is a mess
                mailbox=message.sender,
                headers={"Prefer": 'IdType="ImmutableId"'},
                json={
                    "subject": message.subject,
                    "importance": message.importance or "normal",
                    "body": {"contentType": message.content_type, "content": message.body},
                    "toRecipients": _recipients(message.to_recipients),
                    "ccRecipients": _recipients(message.cc_recipients),
                    "bccRecipients": _recipients(message.bcc_recipients),
                    "singleValueExtendedProperties": [
                        {"id": TAG_PROPERTY_ID, "value": message.graph_tag}
                    ],
                },
            ).body
            or {}
        )
        draft_id = str(draft.get("id") or "")
        if not draft_id:
            raise TransientJobError("Graph created the draft but returned no id")
        steps.note(
            message,
            step=OutboundMessage.Step.DRAFT_CREATED,
            graph_draft_id=draft_id,
            internet_message_id=str(draft.get("internetMessageId") or "")[:255],
        )

    budgets.wait_for_slot(
        message, [(key, throttle.slot_interval(budgets.mail_per_minute() / 60.0))]
    )
    steps.note(message, step=OutboundMessage.Step.SEND_REQUESTED, step_at=timezone.now())
    try:
        steps.call(
            "POST",
            f"{base}/messages/{draft_id}/send",
            repeatable=False,
            mailbox=message.sender,
            # The draft's id is recorded as the sent message's: only an immutable id survives
            # the move to Sent Items (without the header Exchange gives the copy a new id).
            headers={"Prefer": 'IdType="ImmutableId"'},
        )
    except GraphError as exc:
        if not exc.may_have_acted:
            # Refused, or it never left this process: the draft is still a draft.
            steps.note(message, step=OutboundMessage.Step.DRAFT_CREATED, budget_slot_at=None)
        # Otherwise (a 429 may have been acted on, so may a 5xx or a timeout) the step stays
        # SEND_REQUESTED: the next run looks for the tagged sent item before sending again.
        raise
    return steps.mark_sent(message, draft_id)
