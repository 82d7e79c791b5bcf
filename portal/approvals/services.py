"""Approval requests: file, approve, reject, withdraw, run exactly once; break glass; policy.

Every function checks permission server-side and audits in the same transaction as its
change. The requester never approves their own request, whatever the path (session, API
token, Django admin): approvers are compared by account, and service clients and commands
are not people, so they never approve.

One module, just over 600 lines, on purpose: it is one request's state machine (file, decide,
run exactly once, break glass), and its guards (pending only, never one's own, run once) are
read together.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from portal.access.actors import Actor, role_of
from portal.access.authz import require
from portal.approvals import gate, notify
from portal.approvals.gate import ACTIONS, CoveredAction
from portal.approvals.models import ApprovalPolicy, ApprovalRequest
from portal.approvals.signals import break_glass_changed
from portal.audit.services import record
from portal.lib.crypto import decrypt, encrypt
from portal.lib.redaction import redact_text

logger = logging.getLogger(__name__)
TARGET = "approval"
POLICY_PERMISSION = "manage_approvals"
Status = ApprovalRequest.Status


class ApprovalError(Exception):
    """A request about approvals that cannot be carried out; `status` is the HTTP answer."""

    def __init__(
        self, message: str, *, status: int = 400, code: str = "invalid", field: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field
        self.difference: list[str] = []


def covered_action(key: str) -> CoveredAction:
    action = ACTIONS.get(key)
    if action is None:
        known = ", ".join(sorted(ACTIONS))
        raise ApprovalError(f"Unknown action {key!r}; known actions: {known}.", field="action")
    return action


def _reason(text: str, what: str = "reason") -> str:
    text = (text or "").strip()
    if not text:
        raise ApprovalError(
            f"Give a {what}: it goes to the approvers and into the audit log.", field=what
        )
    return text[:2000]


def _person(actor: Actor, doing: str) -> Any:
    """The account of a person acting (session or their API token); nobody else decides."""
    if actor.kind not in ("user", "token") or actor.user is None:
        raise ApprovalError(
            f"Only a person signed in (or with their own API token) can {doing}.",
            status=403,
            code="forbidden",
        )
    return actor.user


def _summary_and_preview(action: CoveredAction, params: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(params, dict):
        raise ApprovalError("params must be a JSON object.", field="params")
    try:
        return action.describe(params)[:300], action.preview(params)
    except (ValueError, TypeError) as exc:
        raise ApprovalError(f"Bad params for {action.key}: {exc}.", field="params") from None


def get_request(request_id: Any) -> ApprovalRequest:
    try:
        return ApprovalRequest.objects.select_related("requester").get(pk=int(request_id))
    except (ApprovalRequest.DoesNotExist, TypeError, ValueError):
        raise ApprovalError(
            f"There is no approval request #{request_id}.", status=404, code="not_found"
        ) from None


def eligible_approvers(permission: str, requester_id: int | None) -> QuerySet:
    """Active people other than the requester who hold the action's permission."""
    holds = (
        Q(is_superuser=True)
        | Q(
            groups__permissions__codename=permission,
            groups__permissions__content_type__app_label="access",
        )
        | Q(
            user_permissions__codename=permission,
            user_permissions__content_type__app_label="access",
        )
    )
    people = get_user_model().objects.filter(is_active=True).filter(holds)
    if requester_id is not None:
        people = people.exclude(pk=requester_id)
    return people.distinct()


def material_difference(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """What changed enough since the preview to show the approver first: a count that at
    least doubled or halved (150 → 1,500 dead jobs), or any other value that changed."""
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        if isinstance(old, int) and isinstance(new, int):
            low, high = sorted((old, new))
            if high < 2 * max(low, 1):
                continue
        lines.append(f"{key}: {old} when requested, {new} now")
    return lines


def current_difference(approval: ApprovalRequest) -> list[str]:
    try:
        now = covered_action(approval.action).preview(approval.params)
    except Exception as exc:  # the target may be gone: that is a difference too
        return [f"the preview cannot be computed now: {exc}"]
    return material_difference(approval.preview, now)


# --------------------------------------------------------------------------- filing


def request_approval(
    actor: Actor, key: str, params: dict[str, Any], reason: str, entry_point: str
) -> ApprovalRequest:
    """File a request for a covered action; refused at once when nobody else could approve."""
    action = covered_action(key)
    reason = _reason(reason)
    require(actor, action.permission, action="approval.request", target_type=TARGET)
    requester = actor.user if actor.kind in ("user", "token") else None
    approvers = eligible_approvers(action.permission, requester.pk if requester else None)
    if not approvers.exists():
        raise ApprovalError(
            f"Nobody else may approve this: no other active account holds "
            f"“{action.permission}”. An admin can run it now with break glass (a typed "
            "reason; the other admins are alerted and the run is marked until reviewed).",
            status=409,
            code="no_approver",
        )
    now = timezone.now()
    addresses = sorted({a for a in approvers.values_list("email", flat=True) if a})
    with transaction.atomic():
        approval = _create(
            "approval.request",
            actor,
            action,
            params,
            reason,
            entry_point,
            requester=requester,
            expires_at=ApprovalRequest.expiry_from(now),
        )
        transaction.on_commit(lambda: notify.approvers_of_request(approval, addresses))
    return approval


def _create(
    audit_action: str,
    actor: Actor,
    action: CoveredAction,
    params: dict[str, Any],
    reason: str,
    entry_point: str,
    **fields: Any,
) -> ApprovalRequest:
    """The request row with its summary and preview, and its audit event (in the caller's
    transaction)."""
    summary, preview = _summary_and_preview(action, params)
    approval = ApprovalRequest.objects.create(
        action=action.key,
        params=params,
        preview=preview,
        summary=summary,
        reason=reason,
        entry_point=entry_point,
        requester_name=actor.name[:150],
        **fields,
    )
    record(
        audit_action,
        actor=actor,
        target_type=TARGET,
        target_id=approval.pk,
        params={"action": action.key, "params": params, "preview": preview, "via": entry_point},
        reason=reason,
    )
    return approval


# --------------------------------------------------------------------------- deciding


def _refuse_unless_pending(approval: ApprovalRequest) -> None:
    if approval.status == Status.PENDING and approval.is_expired:
        ApprovalRequest.objects.filter(pk=approval.pk, status=Status.PENDING).update(
            status=Status.EXPIRED
        )
        approval.status = Status.EXPIRED
    why: dict[str, str] = {
        Status.EXPIRED: f"it expired at {approval.expires_at:%Y-%m-%d %H:%M} UTC; file it again",
        Status.WITHDRAWN: "its requester withdrew it",
        Status.REJECTED: f"{approval.decided_by_name} rejected it",
        Status.APPROVED: f"{approval.decided_by_name} already approved it",
        Status.RUNNING: "it is running",
        Status.EXECUTED: "it already ran",
        Status.FAILED: "it already ran (and failed)",
    }
    if approval.status != Status.PENDING:
        raise ApprovalError(
            f"Approval request #{approval.pk} cannot be decided: {why[approval.status]}.",
            status=409,
            code=f"request_{approval.status}",
        )


def _refuse_own(actor: Actor, approval: ApprovalRequest, audit_action: str) -> None:
    if approval.requester_id is not None and actor.user.pk == approval.requester_id:
        record(
            audit_action,
            actor=actor,
            target_type=TARGET,
            target_id=approval.pk,
            outcome="denied",
            reason="the requester cannot decide their own request",
        )
        raise ApprovalError(
            "You filed this request: someone else must decide it (withdraw it if it is no "
            "longer needed).",
            status=403,
            code="own_request",
        )


def approve(
    actor: Actor, request_id: Any, comment: str = "", *, acknowledge_changes: bool = False
) -> ApprovalRequest:
    """Approve a pending request; unless a command filed it, it runs now, once, as the
    requester. Refused (409) when the preview changed materially and that is not acknowledged."""
    approval = get_request(request_id)
    action = covered_action(approval.action)
    _person(actor, "approve a request")
    require(
        actor,
        action.permission,
        action="approval.approve",
        target_type=TARGET,
        target_id=approval.pk,
    )
    _refuse_own(actor, approval, "approval.approve")
    _refuse_unless_pending(approval)
    difference = current_difference(approval)
    if difference and not acknowledge_changes:
        error = ApprovalError(
            "What the request previewed has changed since it was filed: "
            + "; ".join(difference)
            + ". Look at the difference, then approve again acknowledging it.",
            status=409,
            code="preview_changed",
        )
        error.difference = difference
        raise error
    now = timezone.now()
    # A command's request runs with --approval ID; an action needing what only the requester
    # has runs when they do it again. Both get a fresh expiry from now.
    by_command = (
        approval.entry_point == ApprovalRequest.EntryPoint.COMMAND or not action.runs_on_approval
    )
    with transaction.atomic():
        claimed = ApprovalRequest.objects.filter(
            pk=approval.pk, status=Status.PENDING, expires_at__gt=now
        ).update(
            status=Status.APPROVED if by_command else Status.RUNNING,
            decided_by=actor.user,
            decided_by_name=actor.name[:150],
            decided_at=now,
            decision_comment=comment.strip()[:2000],
            **({"expires_at": ApprovalRequest.expiry_from(now)} if by_command else {}),
        )
        if claimed:
            record(
                "approval.approve",
                actor=actor,
                target_type=TARGET,
                target_id=approval.pk,
                params={
                    "action": approval.action,
                    "requester": approval.requester_name,
                    "difference_acknowledged": difference,
                },
                reason=comment.strip(),
            )
    if not claimed:  # someone else decided (or it expired) meanwhile
        _refuse_unless_pending(get_request(approval.pk))
    approval.refresh_from_db()
    if not by_command:
        _run(approval, _requester_actor(approval, actor), approved_by=actor.name)
        approval.refresh_from_db()
    return approval


def reject(actor: Actor, request_id: Any, comment: str) -> ApprovalRequest:
    approval = get_request(request_id)
    action = covered_action(approval.action)
    _person(actor, "reject a request")
    require(
        actor,
        action.permission,
        action="approval.reject",
        target_type=TARGET,
        target_id=approval.pk,
    )
    comment = _reason(comment, "comment")
    _refuse_own(actor, approval, "approval.reject")
    _refuse_unless_pending(approval)
    with transaction.atomic():
        changed = ApprovalRequest.objects.filter(pk=approval.pk, status=Status.PENDING).update(
            status=Status.REJECTED,
            decided_by=actor.user,
            decided_by_name=actor.name[:150],
            decided_at=timezone.now(),
            decision_comment=comment,
        )
        if changed:
            record(
                "approval.reject",
                actor=actor,
                target_type=TARGET,
                target_id=approval.pk,
                params={"action": approval.action, "requester": approval.requester_name},
                reason=comment,
            )
    if not changed:
        _refuse_unless_pending(get_request(approval.pk))
    approval.refresh_from_db()
    return approval


def withdraw(actor: Actor, request_id: Any) -> ApprovalRequest:
    approval = get_request(request_id)
    user = _person(actor, "withdraw a request")
    if approval.requester_id != user.pk:
        record(
            "approval.withdraw",
            actor=actor,
            target_type=TARGET,
            target_id=approval.pk,
            outcome="denied",
            reason="only the requester withdraws a request",
        )
        raise ApprovalError(
            "Only the person who filed a request can withdraw it.", status=403, code="forbidden"
        )
    _refuse_unless_pending(approval)
    with transaction.atomic():
        changed = ApprovalRequest.objects.filter(pk=approval.pk, status=Status.PENDING).update(
            status=Status.WITHDRAWN, decided_at=timezone.now()
        )
        if changed:
            record("approval.withdraw", actor=actor, target_type=TARGET, target_id=approval.pk)
    if not changed:
        _refuse_unless_pending(get_request(approval.pk))
    approval.refresh_from_db()
    return approval


# --------------------------------------------------------------------------- running


def _requester_actor(approval: ApprovalRequest, approver: Actor) -> Actor:
    user = approval.requester
    if user is None:
        raise ApprovalError("This request names no person to run it as.", status=409)
    return Actor(
        kind="user",
        name=user.get_username(),
        role=role_of(user),
        user=user,
        ip=approver.ip,
        user_agent=approver.user_agent,
        request_id=approval.correlation_id,
    )


def _run(
    approval: ApprovalRequest,
    actor: Actor,
    *,
    approved_by: str,
    perform: Callable[[Actor], dict[str, Any] | None] | None = None,
) -> None:
    """Run the claimed request (status RUNNING) once, as `actor`, and record how it went."""
    action = covered_action(approval.action)
    result: dict[str, Any] = {}
    secret = ""
    error = ""
    try:
        # The requester's permission is checked again: a role taken away since filing wins.
        require(
            actor,
            action.permission,
            action=approval.action,
            target_type=TARGET,
            target_id=approval.pk,
        )
        with gate.authorized(approval.action, approval.params, approval.pk):
            result = (perform or (lambda who: action.run(who, approval.params)))(actor) or {}
        secret = result.pop(gate.SECRET, "")
    except PermissionDenied as exc:
        error = f"{approval.requester_name} may no longer do this: {exc}"
    except Exception as exc:  # the action's own refusal (state changed, Graph said no, …)
        logger.warning("Approval #%s: %s failed", approval.pk, approval.action, exc_info=True)
        error = redact_text(str(exc))[:2000] or exc.__class__.__name__
    with transaction.atomic():
        ApprovalRequest.objects.filter(pk=approval.pk).update(
            status=Status.FAILED if error else Status.EXECUTED,
            executed_at=timezone.now(),
            result=result,
            secret_encrypted=encrypt(secret) if secret else "",
            error=error,
        )
        record(
            "approval.run",
            actor=actor,
            target_type=TARGET,
            target_id=approval.pk,
            params={
                "action": approval.action,
                "params": approval.params,
                "approved_by": approved_by,
                "break_glass": approval.break_glass,
                "result": result,
            },
            outcome="failure" if error else "success",
            reason=error,
        )


def run_approved_by_command(
    actor: Actor, request_id: Any, perform: Callable[[Actor], dict[str, Any] | None]
) -> ApprovalRequest:
    """`--approval ID`: run an approved command request, once. `perform` is the command's own
    work; the gate lets through only the action and params that were approved."""
    approval = get_request(request_id)
    if approval.entry_point != ApprovalRequest.EntryPoint.COMMAND:
        raise ApprovalError(
            f"Approval request #{approval.pk} was filed in the {approval.get_entry_point_display()}"
            " and ran when it was approved; a command runs only requests filed with --request.",
            status=409,
        )
    if approval.status == Status.PENDING and not approval.is_expired:
        raise ApprovalError(
            f"Approval request #{approval.pk} waits for a second person's approval.", status=409
        )
    if approval.status != Status.APPROVED or approval.expires_at <= timezone.now():
        if approval.status == Status.APPROVED:
            raise ApprovalError(
                f"Approval request #{approval.pk} was approved but not run in time (it expired "
                f"at {approval.expires_at:%Y-%m-%d %H:%M} UTC); file it again.",
                status=409,
            )
        _refuse_unless_pending(approval)
    claimed = ApprovalRequest.objects.filter(pk=approval.pk, status=Status.APPROVED).update(
        status=Status.RUNNING
    )
    if not claimed:
        raise ApprovalError(f"Approval request #{approval.pk} already ran.", status=409)
    run_as = Actor(
        kind=actor.kind, name=actor.name, role=actor.role, request_id=approval.correlation_id
    )
    _run(approval, run_as, approved_by=approval.decided_by_name, perform=perform)
    approval.refresh_from_db()
    return approval


def reveal_secret(actor: Actor, request_id: Any) -> str:
    """The token or password the approved run made, to its requester, once; then erased."""
    user = _person(actor, "see what an approved run made")
    with transaction.atomic():
        approval = (
            ApprovalRequest.objects.select_for_update()
            .filter(pk=get_request(request_id).pk)
            .first()
        )
        if approval is None or approval.requester_id != user.pk:
            raise ApprovalError(
                "Only the requester sees what the run made.", status=403, code="forbidden"
            )
        if not approval.secret_encrypted:
            raise ApprovalError(
                "There is nothing to show: it was shown once already, or the run made no secret.",
                status=409,
                code="nothing_to_show",
            )
        secret = decrypt(approval.secret_encrypted)
        ApprovalRequest.objects.filter(pk=approval.pk).update(secret_encrypted="")
        record("approval.secret_shown", actor=actor, target_type=TARGET, target_id=approval.pk)
    return secret


# --------------------------------------------------------------------------- break glass


def break_glass(
    actor: Actor, key: str, params: dict[str, Any], reason: str, entry_point: str
) -> ApprovalRequest:
    """An admin runs a covered action now, without approval: it runs at once, alerts the other
    admins and stays marked (audit log, dashboard) until someone else reviews it."""
    action = covered_action(key)
    reason = _reason(reason)
    user = _person(actor, "break glass")
    require(actor, POLICY_PERMISSION, action="approval.break_glass", target_type=TARGET)
    require(actor, action.permission, action="approval.break_glass", target_type=TARGET)
    now = timezone.now()
    # An action needing what only the admin has (a tenant's credential) is not run from here:
    # the break glass lets them do it again now, once.
    later = not action.runs_on_approval
    with transaction.atomic():
        approval = _create(
            "approval.break_glass",
            actor,
            action,
            params,
            reason,
            entry_point,
            requester=user,
            created_at=now,
            expires_at=ApprovalRequest.expiry_from(now) if later else now,
            status=Status.APPROVED if later else Status.RUNNING,
            break_glass=True,
            decided_by=user,
            decided_by_name=f"{actor.name} (break glass)"[:150],
            decided_at=now,
        )
        transaction.on_commit(
            lambda: break_glass_changed.send(sender=ApprovalRequest, approval_id=approval.pk)
        )
    if later:
        return approval
    run_as = Actor(
        kind=actor.kind,
        name=actor.name,
        role=actor.role,
        user=actor.user,
        token=actor.token,
        ip=actor.ip,
        user_agent=actor.user_agent,
        request_id=approval.correlation_id,
    )
    _run(approval, run_as, approved_by="break glass")
    approval.refresh_from_db()
    return approval


def review_break_glass(actor: Actor, request_id: Any, comment: str) -> ApprovalRequest:
    approval = get_request(request_id)
    user = _person(actor, "review a break-glass run")
    require(
        actor,
        POLICY_PERMISSION,
        action="approval.review",
        target_type=TARGET,
        target_id=approval.pk,
    )
    comment = _reason(comment, "comment")
    if not approval.break_glass:
        raise ApprovalError(f"#{approval.pk} was not a break-glass run.", status=409)
    if approval.reviewed_at is not None:
        raise ApprovalError(
            f"#{approval.pk} was already reviewed by {approval.reviewed_by_name}.", status=409
        )
    if approval.requester_id == user.pk:
        raise ApprovalError(
            "You broke glass for this run: another admin reviews it.",
            status=403,
            code="own_request",
        )
    with transaction.atomic():
        changed = ApprovalRequest.objects.filter(pk=approval.pk, reviewed_at__isnull=True).update(
            reviewed_at=timezone.now(), reviewed_by_name=actor.name[:150], review_comment=comment
        )
        if changed:
            record(
                "approval.review",
                actor=actor,
                target_type=TARGET,
                target_id=approval.pk,
                params={"action": approval.action, "broke_glass": approval.requester_name},
                reason=comment,
            )
            transaction.on_commit(
                lambda: break_glass_changed.send(sender=ApprovalRequest, approval_id=approval.pk)
            )
    approval.refresh_from_db()
    return approval


# --------------------------------------------------------------------------- policy


def set_policy(actor: Actor, keys: list[str], bulk_threshold: int) -> ApprovalPolicy:
    require(actor, POLICY_PERMISSION, action="approval.policy", target_type=TARGET)
    if gate.policy().from_environment:
        raise ApprovalError(
            "The approval policy is set by APPROVAL_REQUIRED_FOR in this deployment's "
            "environment; change it there.",
            status=409,
        )
    for key in keys:
        covered_action(key)
    if not isinstance(bulk_threshold, int) or bulk_threshold < 1:
        raise ApprovalError(
            "The bulk threshold must be a whole number of at least 1.", field="bulk_threshold"
        )
    before = gate.policy()
    with transaction.atomic():
        row, _ = ApprovalPolicy.objects.update_or_create(
            pk=1,
            defaults={
                "actions": sorted(set(keys)),
                "bulk_threshold": bulk_threshold,
                "updated_by": actor.name[:150],
                "updated_at": timezone.now(),
            },
        )
        record(
            "approval.policy",
            actor=actor,
            target_type=TARGET,
            target_id="policy",
            params={
                "before": {
                    "actions": sorted(before.actions),
                    "bulk_threshold": before.bulk_threshold,
                },
                "after": {"actions": row.actions, "bulk_threshold": row.bulk_threshold},
            },
        )
    return row
