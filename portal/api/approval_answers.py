"""The JSON shape of an approval request, and the API's answer when a covered action needs one.

Kept apart from portal.api.framework (which calls `answer_required`) and the approval views
(which use both), so neither imports the other.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from portal.access.actors import Actor
from portal.approvals import services
from portal.approvals.gate import ApprovalRequired
from portal.approvals.models import ApprovalRequest
from portal.approvals.services import ApprovalError


def approval_json(approval: ApprovalRequest) -> dict[str, Any]:
    return {
        "id": approval.pk,
        "action": approval.action,
        "summary": approval.summary,
        "params": approval.params,
        "preview": approval.preview,
        "reason": approval.reason,
        "status": ApprovalRequest.Status.EXPIRED if approval.is_expired else approval.status,
        "requestedBy": approval.requester_name,
        "requestedVia": approval.entry_point,
        "createdAt": approval.created_at,
        "expiresAt": approval.expires_at,
        "decidedBy": approval.decided_by_name or None,
        "decidedAt": approval.decided_at,
        "comment": approval.decision_comment,
        "executedAt": approval.executed_at,
        "result": approval.result,
        "error": approval.error,
        "breakGlass": approval.break_glass,
        "reviewedBy": approval.reviewed_by_name or None,
        "reviewedAt": approval.reviewed_at,
        "url": reverse("api:approval", args=[approval.pk]),
    }


def error_answer(exc: ApprovalError) -> JsonResponse:
    body: dict[str, Any] = {"error": exc.code, "detail": str(exc)}
    if exc.field:
        body["field"] = exc.field
    if exc.difference:
        body["difference"] = exc.difference
    return JsonResponse(body, status=exc.status)


def answer(approval: ApprovalRequest, status: int) -> JsonResponse:
    return JsonResponse(
        {"approvalRequest": approval_json(approval)},
        status=status,
        json_dumps_params={"default": str},
    )


def answer_required(
    request: HttpRequest, actor: Actor, body: dict[str, Any], required: ApprovalRequired
) -> JsonResponse:
    """A covered API action: 202 with the approval request filed (the body's "reason"), or,
    for an admin's `"breakGlass": true`, the run itself; 400 without a reason."""
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        return JsonResponse(
            {
                "error": "approval_required",
                "detail": f'{required} Send the same request with a "reason" (it goes to the '
                "approvers) to file an approval request.",
                "field": "reason",
                "action": required.action.key,
            },
            status=400,
        )
    try:
        if body.get("breakGlass") is True:
            approval = services.break_glass(
                actor, required.action.key, required.params, reason, "api"
            )
            return answer(approval, 200)
        approval = services.request_approval(
            actor, required.action.key, required.params, reason, "api"
        )
    except ApprovalError as exc:
        return error_answer(exc)
    return answer(approval, 202)
