"""/api/approvals: list and file approval requests, approve, reject, withdraw, review."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from portal.access.actors import Actor
from portal.api.approval_answers import answer, approval_json, error_answer
from portal.api.framework import TENANT_WIDE, ApiError, api_endpoint, by_method
from portal.approvals import services
from portal.approvals.models import ApprovalRequest
from portal.approvals.services import ApprovalError

MAX_LIST = 200


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise ApiError(400, "invalid_body", f"{key} must be a string.", field=key)
    return value


@api_endpoint(
    "/api/approvals",
    "GET",
    "view_console",
    "Approval requests, newest first: the pending ones (default) or all (status=all).",
    query={"status": "pending (default) or all"},
)
def approvals_list(request: HttpRequest, actor: Actor, body: dict) -> dict[str, Any]:
    which = request.GET.get("status", "pending")
    if which not in ("pending", "all"):
        raise ApiError(400, "invalid_parameter", "status must be pending or all.")
    rows = ApprovalRequest.objects.all()
    if which == "pending":
        rows = ApprovalRequest.objects.pending()
    return {
        "pending": ApprovalRequest.objects.pending().count(),
        "approvals": [approval_json(a) for a in rows[:MAX_LIST]],
    }


@api_endpoint(
    "/api/approvals",
    "POST",
    "view_console",
    "File an approval request for a covered action (the requester needs its permission), or "
    'as an admin run it now with "breakGlass": true.',
    request_body={
        "type": "object",
        "required": ["action", "reason"],
        "properties": {
            "action": {"type": "string"},
            "params": {"type": "object"},
            "reason": {"type": "string"},
            "breakGlass": {"type": "boolean"},
        },
    },
    responses={
        "202": "the request, waiting for approval",
        "200": "break glass: the request, already run",
        "409": "nobody else may approve it (break glass instead)",
    },
)
def approvals_create(request: HttpRequest, actor: Actor, body: dict) -> Any:
    key, reason = _text(body, "action"), _text(body, "reason")
    params = body.get("params", {})
    try:
        if body.get("breakGlass") is True:
            return answer(services.break_glass(actor, key, params, reason, "api"), 200)
        return answer(services.request_approval(actor, key, params, reason, "api"), 202)
    except ApprovalError as exc:
        return error_answer(exc)


approvals_collection = by_method(get=approvals_list, post=approvals_create)


@api_endpoint(
    "/api/approvals/{approvalId}",
    "GET",
    "view_console",
    "One approval request.",
    scope=TENANT_WIDE,
)
def approval_detail(request: HttpRequest, actor: Actor, body: dict, request_id: int) -> Any:
    try:
        return {"approvalRequest": approval_json(services.get_request(request_id))}
    except ApprovalError as exc:
        return error_answer(exc)


def _decision(summary: str, path: str, run: Any, fields: dict[str, Any]) -> Any:
    @api_endpoint(
        f"/api/approvals/{{approvalId}}/{path}",
        "POST",
        "view_console",
        summary,
        scope=TENANT_WIDE,
        request_body={"type": "object", "properties": fields},
        responses={
            "200": "the request after the decision",
            "403": "your own request, or you may not do the action",
            "404": "no such request",
            "409": "it expired, was withdrawn, was decided or already ran (the detail says "
            "which); or the preview changed (difference) and acknowledgeChanges was not sent",
        },
    )
    def view(request: HttpRequest, actor: Actor, body: dict, request_id: int) -> JsonResponse:
        try:
            return answer(run(actor, request_id, body), 200)
        except ApprovalError as exc:
            return error_answer(exc)

    view.__name__ = f"approval_{path}"
    return view


approval_approve = _decision(
    "Approve a pending request (someone other than its requester, holding the action's "
    "permission); it runs now, once, as the requester.",
    "approve",
    lambda actor, rid, body: services.approve(
        actor,
        rid,
        _text(body, "comment"),
        acknowledge_changes=body.get("acknowledgeChanges") is True,
    ),
    {"comment": {"type": "string"}, "acknowledgeChanges": {"type": "boolean"}},
)
approval_reject = _decision(
    "Reject a pending request, with a comment.",
    "reject",
    lambda actor, rid, body: services.reject(actor, rid, _text(body, "comment")),
    {"comment": {"type": "string"}},
)
approval_withdraw = _decision(
    "Withdraw your own pending request.",
    "withdraw",
    lambda actor, rid, body: services.withdraw(actor, rid),
    {},
)
approval_review = _decision(
    "Review a break-glass run (another admin), with a comment.",
    "review",
    lambda actor, rid, body: services.review_break_glass(actor, rid, _text(body, "comment")),
    {"comment": {"type": "string"}},
)


@api_endpoint(
    "/api/approvals/{approvalId}/secret",
    "POST",
    "view_console",
    "The token or password an approved run made, to its requester, once.",
    scope=TENANT_WIDE,
    responses={
        "200": "secret",
        "403": "not your request",
        "409": "already shown, or nothing was made",
    },
)
def approval_secret(request: HttpRequest, actor: Actor, body: dict, request_id: int) -> Any:
    try:
        return {"secret": services.reveal_secret(actor, request_id)}
    except ApprovalError as exc:
        return error_answer(exc)
