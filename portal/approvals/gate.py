"""The gate every covered action's service passes before it does anything.

A service calls `check(actor, key, params, count=…)` after its permission check. When the
policy covers the action (and, for bulk actions, `count` is above the threshold), `check`
raises ApprovalRequired, which the entry point turns into an approval request: the console
shows the request form, the API answers 202, a command files or refuses. The action then
runs only inside `authorized(...)`, which approvals.services enters when it runs an approved
request or a break-glass run, for exactly that action and those parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.utils import timezone

from portal.access.actors import Actor
from portal.approvals.models import ApprovalPolicy, ApprovalRequest
from portal.audit.services import record


@dataclass(frozen=True)
class CoveredAction:
    key: str
    label: str  # what the policy page lists, e.g. "Bulk retry (above the threshold)"
    permission: str  # who may request it, approve it and run it
    # Runs the action as `actor` with the request's params; returns ids of what it made.
    run: Callable[[Actor, dict[str, Any]], dict[str, Any]]
    # What the console's preview shows for these params now (counts, states), for the
    # request and for the difference at approval time.
    preview: Callable[[dict[str, Any]], dict[str, Any]]
    describe: Callable[[dict[str, Any]], str]  # one line: what this request would do
    bulk: bool = False  # covered only above the bulk threshold
    recommended: bool = True
    # False: it needs what only the requester has (a secret not kept anywhere), so approval
    # lets the requester run it once themselves, with these exact params, before expiry.
    runs_on_approval: bool = True


ACTIONS: dict[str, CoveredAction] = {}
# A run's result may carry a secret made for the requester (a token, a password) under this
# key: it is kept encrypted for the requester to see once, never in the result or the audit.
SECRET = "_secret"


def register(action: CoveredAction) -> CoveredAction:
    ACTIONS[action.key] = action
    return action


class ApprovalRequired(Exception):
    """The policy covers this action: it needs a second person (or break glass)."""

    def __init__(self, action: CoveredAction, params: dict[str, Any], count: int | None) -> None:
        self.action, self.params, self.count = action, params, count
        self.summary = action.describe(params)
        super().__init__(
            f"{self.summary}: this needs a second person's approval (approval policy)."
        )


@dataclass(frozen=True)
class Policy:
    actions: frozenset[str]
    bulk_threshold: int
    from_environment: bool
    updated_by: str = ""
    updated_at: Any = None
    unknown: tuple[str, ...] = field(default=())


def policy() -> Policy:
    """APPROVAL_REQUIRED_FOR when the environment sets it, else the page's saved policy."""
    if settings.APPROVAL_REQUIRED_FOR:
        named = tuple(settings.APPROVAL_REQUIRED_FOR)
        return Policy(
            frozenset(named),
            settings.APPROVAL_BULK_THRESHOLD,
            True,
            unknown=tuple(name for name in named if name not in ACTIONS),
        )
    row = ApprovalPolicy.objects.filter(pk=1).first()
    if row is None:
        return Policy(frozenset(), settings.APPROVAL_BULK_THRESHOLD, False)
    return Policy(frozenset(row.actions), row.bulk_threshold, False, row.updated_by, row.updated_at)


def recommended_keys() -> list[str]:
    return [key for key, action in ACTIONS.items() if action.recommended]


def is_covered(key: str, count: int | None = None) -> bool:
    current = policy()
    if key not in current.actions:
        return False
    if ACTIONS[key].bulk:
        return count is not None and count > current.bulk_threshold
    return True


@dataclass(frozen=True)
class Authorization:
    key: str
    params: dict[str, Any]
    request_id: int  # the ApprovalRequest (approved or break glass)


_authorized: ContextVar[Authorization | None] = ContextVar("approval_authorized", default=None)


@contextmanager
def authorized(key: str, params: dict[str, Any], request_id: int) -> Iterator[None]:
    """Let exactly this action with exactly these params through (approvals.services only)."""
    token = _authorized.set(Authorization(key, params, request_id))
    try:
        yield
    finally:
        _authorized.reset(token)


def check(actor: Actor, key: str, params: dict[str, Any], *, count: int | None = None) -> None:
    """Return when the action may go ahead; raise ApprovalRequired when it needs approval."""
    action = ACTIONS[key]
    current = _authorized.get()
    if current is not None and current.key == key and current.params == params:
        return
    if not is_covered(key, count):
        return
    if not action.runs_on_approval and _claim_approved(actor, key, params):
        return
    raise ApprovalRequired(action, params, count)


def _claim_approved(actor: Actor, key: str, params: dict[str, Any]) -> bool:
    """The requester's own approved request for exactly this, used now (once)."""
    if actor.user is None:
        return False  # commands run theirs with --approval ID
    now = timezone.now()
    approved = ApprovalRequest.objects.filter(
        action=key,
        status=ApprovalRequest.Status.APPROVED,
        requester=actor.user,
        expires_at__gt=now,
    )
    for approval in approved:
        if approval.params != params:
            continue
        used = ApprovalRequest.objects.filter(
            pk=approval.pk, status=ApprovalRequest.Status.APPROVED
        ).update(status=ApprovalRequest.Status.EXECUTED, executed_at=now)
        if used:
            record(
                "approval.run",
                actor=actor,
                target_type="approval",
                target_id=approval.pk,
                params={"action": key, "params": params, "approved_by": approval.decided_by_name},
            )
            return True
    return False
