"""Console pages: the approval request form, the Approvals list and detail, the policy page.

Thin: they translate between forms, messages and redirects; approvals.services decides.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_GET, require_POST

from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.approvals import gate, services
from portal.approvals.gate import ApprovalRequired
from portal.approvals.models import ApprovalRequest
from portal.approvals.services import ApprovalError

PAYLOAD_SALT = "portal.approvals.request-form"
# What a run made, and the page that shows it.
RESULT_PAGES = {
    "operation_id": "console:bulk_operation",
    "session_id": "console:recovery_session",
    "credential_id": "console:credentials",
}


def _entry_point(request: HttpRequest) -> str:
    admin = request.path.startswith(reverse("admin:index"))
    return ApprovalRequest.EntryPoint.ADMIN if admin else ApprovalRequest.EntryPoint.CONSOLE


def request_form(
    request: HttpRequest,
    required: ApprovalRequired,
    *,
    error: str = "",
    reason: str = "",
    status: int = 200,
) -> HttpResponse:
    """What needs approval, its preview, a reason field; break glass for admins."""
    payload = signing.dumps(
        {
            "action": required.action.key,
            "params": required.params,
            "via": _entry_point(request),
        },
        salt=PAYLOAD_SALT,
    )
    context = {
        "required": required,
        "preview": required.action.preview(required.params),
        "payload": payload,
        "reason": reason,
        "error": error,
        "can_break_glass": Actor.from_request(request).can(services.POLICY_PERMISSION),
        "expiry_minutes": settings.APPROVAL_EXPIRY_MINUTES,
    }
    return render(request, "approvals/request.html", context, status=status)


@require_POST
@requires("view_console")
def approval_new(request: HttpRequest) -> HttpResponse:
    """File the request the form showed, or (admins) break glass and run it now."""
    try:
        data = signing.loads(request.POST.get("payload", ""), salt=PAYLOAD_SALT)
        action = services.covered_action(data["action"])
        params, via = data["params"], data["via"]
    except (signing.BadSignature, KeyError, TypeError, ApprovalError):
        messages.error(request, "That approval form was altered or is incomplete; start again.")
        return redirect("approvals:list")
    actor = Actor.from_request(request)
    reason = request.POST.get("reason", "")
    try:
        if request.POST.get("mode") == "break_glass":
            approval = services.break_glass(actor, action.key, params, reason, via)
        else:
            approval = services.request_approval(actor, action.key, params, reason, via)
    except ApprovalError as exc:
        return request_form(
            request,
            ApprovalRequired(action, params, None),
            error=str(exc),
            reason=reason,
            status=exc.status,
        )
    if approval.status == ApprovalRequest.Status.APPROVED:  # break glass, done by hand
        messages.info(request, f"Now do it again: {approval.summary}. It goes through once.")
    if approval.break_glass:
        _say_how_it_ran(request, approval)
        messages.warning(
            request,
            "Break glass: the other admins are alerted, and this run stays marked on the "
            "dashboard until another admin reviews it.",
        )
    else:
        messages.success(
            request,
            f"Approval request #{approval.pk} filed. It runs once another person holding the "
            "permission approves it; it expires "
            f"{approval.expires_at:%H:%M} UTC.",
        )
    return redirect("approvals:detail", request_id=approval.pk)


def _say_how_it_ran(request: HttpRequest, approval: ApprovalRequest) -> None:
    if approval.status == ApprovalRequest.Status.EXECUTED:
        messages.success(request, f"Done: {approval.summary}.")
    elif approval.status == ApprovalRequest.Status.FAILED:
        messages.error(request, f"It ran and failed: {approval.error}")


def result_link(approval: ApprovalRequest) -> str:
    for key, url_name in RESULT_PAGES.items():
        if key in approval.result:
            try:
                if url_name == "console:credentials":
                    return reverse(url_name)
                return reverse(url_name, args=[approval.result[key]])
            except NoReverseMatch:
                return ""
    return ""


@require_GET
@requires("view_console")
def approval_list(request: HttpRequest) -> HttpResponse:
    decided = ApprovalRequest.objects.exclude(pk__in=ApprovalRequest.objects.pending().values("pk"))
    context = {
        "pending": ApprovalRequest.objects.pending().select_related("requester"),
        "unreviewed": ApprovalRequest.objects.unreviewed_break_glass(),
        "recent": decided[:50],
        "policy": gate.policy(),
        "covered_labels": [
            action.label for key, action in gate.ACTIONS.items() if key in gate.policy().actions
        ],
    }
    return render(request, "approvals/list.html", context)


@require_GET
@requires("view_console")
def approval_detail(request: HttpRequest, request_id: int) -> HttpResponse:
    return _detail_page(request, request_id)


def _detail_page(request: HttpRequest, request_id: int, revealed: str = "") -> HttpResponse:
    try:
        approval = services.get_request(request_id)
    except ApprovalError:
        raise Http404("There is no such approval request.") from None
    action = gate.ACTIONS.get(approval.action)
    user = request.user
    pending = approval.status == ApprovalRequest.Status.PENDING and not approval.is_expired
    own = approval.requester_id == user.pk
    may_decide = action is not None and user.has_perm(f"access.{action.permission}")
    context = {
        "approval": approval,
        "label": action.label if action else approval.action,
        "difference": services.current_difference(approval) if pending else [],
        "can_decide": pending and may_decide and not own,
        "own": own,
        "can_withdraw": pending and own,
        "can_review": approval.break_glass
        and approval.reviewed_at is None
        and not own
        and user.has_perm(f"access.{services.POLICY_PERMISSION}"),
        "result_link": result_link(approval),
        "can_reveal": own and bool(approval.secret_encrypted),
        "revealed": revealed,
    }
    return render(request, "approvals/detail.html", context)


@require_POST
@requires("view_console")
def approval_decide(request: HttpRequest, request_id: int, decision: str) -> HttpResponse:
    actor = Actor.from_request(request)
    comment = request.POST.get("comment", "")
    decisions: dict[str, Any] = {
        "approve": lambda: services.approve(
            actor,
            request_id,
            comment,
            acknowledge_changes=request.POST.get("acknowledge_changes") == "yes",
        ),
        "reject": lambda: services.reject(actor, request_id, comment),
        "withdraw": lambda: services.withdraw(actor, request_id),
        "review": lambda: services.review_break_glass(actor, request_id, comment),
    }
    if decision == "reveal":
        try:
            return _detail_page(request, request_id, services.reveal_secret(actor, request_id))
        except ApprovalError as exc:
            messages.error(request, str(exc))
            return redirect("approvals:detail", request_id=request_id)
    if decision not in decisions:
        raise Http404("No such decision.")
    try:
        approval = decisions[decision]()
    except ApprovalError as exc:
        if exc.status == 404:
            raise Http404(str(exc)) from None
        messages.error(request, str(exc))
        return redirect("approvals:detail", request_id=request_id)
    if decision == "approve":
        if approval.status == ApprovalRequest.Status.APPROVED:
            how = (
                f"with --approval {approval.pk}"
                if approval.entry_point == ApprovalRequest.EntryPoint.COMMAND
                else "by doing it again"
            )
            messages.success(request, f"Approved. {approval.requester_name} runs it {how}.")
        else:
            _say_how_it_ran(request, approval)
    else:
        messages.success(request, f"Request #{approval.pk}: {approval.shown_status.lower()}.")
    return redirect("approvals:detail", request_id=request_id)


class PolicyForm(forms.Form):
    actions = forms.MultipleChoiceField(
        required=False, widget=forms.CheckboxSelectMultiple, label="Actions that need approval"
    )
    bulk_threshold = forms.IntegerField(
        label="Bulk operations need approval above this many items",
        error_messages={"min_value": "The threshold must be at least 1."},
        min_value=1,
        max_value=10_000_000,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        actions = self.fields["actions"]
        assert isinstance(actions, forms.MultipleChoiceField)
        actions.choices = [(key, action.label) for key, action in gate.ACTIONS.items()]


@requires(services.POLICY_PERMISSION)
def policy_page(request: HttpRequest) -> HttpResponse:
    current = gate.policy()
    form = PolicyForm(
        request.POST or None,
        initial={"actions": sorted(current.actions), "bulk_threshold": current.bulk_threshold},
    )
    status = 200
    if request.method == "POST":
        if form.is_valid():
            recommended = request.POST.get("recommended") == "yes"
            keys = gate.recommended_keys() if recommended else form.cleaned_data["actions"]
            try:
                services.set_policy(
                    Actor.from_request(request), keys, form.cleaned_data["bulk_threshold"]
                )
            except ApprovalError as exc:
                messages.error(request, str(exc))
            else:
                messages.success(request, "Approval policy saved.")
                return redirect("approvals:policy")
        status = 400
    context = {"form": form, "policy": current, "actions": gate.ACTIONS}
    return render(request, "approvals/policy.html", context, status=status)
