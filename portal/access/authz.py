"""Server-side permission checks shared by views, the API, admin actions and commands."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied

from portal.access.actors import Actor
from portal.access.roles import PERMISSIONS
from portal.audit.services import record


def require(
    actor: Actor, codename: str, *, action: str, target_type: str = "", target_id: object = ""
) -> None:
    """Raise PermissionDenied (and audit the denial) unless the actor may do `codename`.

    Call it before opening the transaction of the action itself: a denial must be recorded
    even though the action never happens.
    """
    if codename not in PERMISSIONS:
        raise ValueError(f"Unknown permission {codename!r}")
    if actor.can(codename):
        return

    record(
        action,
        actor=actor,
        target_type=target_type,
        target_id=target_id,
        outcome="denied",
        reason=f"requires {codename}; role is {actor.role or 'none'}",
    )
    role = actor.role or "none"
    raise PermissionDenied(f"Your role ({role}) may not {PERMISSIONS[codename].lower()}.")
