"""Sign-ins, sign-outs, failures and lockouts go to the audit log."""

from __future__ import annotations

import time
from typing import Any

from axes.signals import user_locked_out
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from portal.access.actors import Actor
from portal.access.middleware import SESSION_STARTED_KEY
from portal.audit.services import record


def _anonymous_actor(request: Any, username: str) -> Actor:
    base = Actor.from_request(request) if request is not None else Actor.system("unknown")
    return Actor(
        kind="anonymous",
        name=(username or "anonymous")[:150],
        role="",
        ip=base.ip,
        user_agent=base.user_agent,
        request_id=base.request_id,
    )


def _is_account(username: str) -> bool:
    """Failures for names nobody has are only counted, per address (portal.access.signals):
    an unauthenticated caller must not grow the audit log by inventing usernames."""
    return bool(username) and get_user_model().objects.filter(username__iexact=username).exists()


@receiver(user_logged_in)
def audit_login(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is None:
        return

    request.session[SESSION_STARTED_KEY] = time.time()
    record("auth.login", actor=Actor.from_request(request), target_type="user", target_id=user.pk)


@receiver(user_logged_out)
def audit_logout(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    if request is None or user is None:
        return
    actor = Actor.from_request(request)
    if actor.kind == "anonymous":
        actor = Actor(
            kind="user",
            name=user.get_username(),
            role="",
            user=user,
            ip=actor.ip,
            user_agent=actor.user_agent,
            request_id=actor.request_id,
        )
    record("auth.logout", actor=actor, target_type="user", target_id=user.pk)


@receiver(user_login_failed)
def audit_login_failed(sender: Any, credentials: dict, request: Any = None, **kwargs: Any) -> None:
    username = str(credentials.get("username", ""))
    if not _is_account(username):
        return
    record(
        "auth.login",
        actor=_anonymous_actor(request, username),
        target_type="user",
        target_id=username[:150],
        outcome="failure",
        reason="wrong username or password",
    )


@receiver(user_locked_out)
def audit_lockout(
    sender: Any, request: Any, username: str = "", ip_address: str = "", **kwargs: Any
) -> None:
    if not _is_account(username or ""):
        return
    record(
        "auth.lockout",
        actor=_anonymous_actor(request, username or ""),
        target_type="user",
        target_id=(username or "")[:150],
        outcome="denied",
        reason="too many failed sign-ins; locked for the cool-off period",
    )
