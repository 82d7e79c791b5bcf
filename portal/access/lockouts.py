"""Sign-in lockouts (django-axes records): cleared only here, role-checked and audited."""

from __future__ import annotations

from collections.abc import Iterable

from axes.models import AccessAttempt
from django.db import transaction

from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record


def clear_lockouts(actor: Actor, attempt_ids: Iterable[int]) -> int:
    """Delete the given lockout records (the accounts may sign in again). Returns how many."""
    ids = sorted(set(attempt_ids))
    require(
        actor,
        "manage_users",
        action="access.clear_lockouts",
        target_type="access_attempt",
        target_id=",".join(map(str, ids))[:200],
    )
    with transaction.atomic():
        attempts = list(
            AccessAttempt.objects.filter(pk__in=ids).values("pk", "username", "ip_address")
        )
        AccessAttempt.objects.filter(pk__in=[a["pk"] for a in attempts]).delete()
        record(
            "access.clear_lockouts",
            actor=actor,
            target_type="access_attempt",
            target_id=",".join(str(a["pk"]) for a in attempts)[:200],
            params={
                "cleared": [
                    {"username": a["username"], "ip_address": a["ip_address"]} for a in attempts
                ]
            },
        )
    return len(attempts)
