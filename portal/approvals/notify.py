"""Tell the people who may approve (extra: the badge and /metrics work without it).

Through the portal's own send path (an e-mail queued like any other outbound message) from
APPROVAL_NOTIFY_FROM, when set. Graph may be what is down, so a failure here is logged and
never stops the request.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.urls import reverse

from integrations.microsoft.messaging import outbox
from integrations.microsoft.messaging.schema import fit_subject
from portal.approvals.models import ApprovalRequest

logger = logging.getLogger(__name__)


def approvers_of_request(approval: ApprovalRequest, addresses: list[str]) -> None:
    """Queue one e-mail to the approvers' addresses (none, or no sender: nothing)."""
    if not settings.APPROVAL_NOTIFY_FROM or not addresses:
        return
    link = settings.PUBLIC_BASE_URL + reverse("approvals:detail", args=[approval.pk])
    body = (
        f"{approval.requester_name} asks for approval: {approval.summary}.\n\n"
        f"Why: {approval.reason}\n\n"
        f"Approve or reject before {approval.expires_at:%Y-%m-%d %H:%M} UTC: {link}\n"
    )
    try:
        outbox.send_mail(
            settings.APPROVAL_NOTIFY_FROM,
            addresses,
            fit_subject(f"[Fleet Graph Portal] Approval needed: {approval.summary}"),
            body,
            idempotency_key=f"approval-{approval.pk}-request",
            created_by="approvals",
            correlation_id=approval.correlation_id,
        )
    except Exception:
        logger.exception("Could not queue the approval e-mail for request #%s", approval.pk)
