"""Sign-in bookkeeping: the last sign-in and its method; break-glass sign-ins raise an alert;
failed sign-ins count against the caller's address (credential_limits)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_login_failed
from django.db import transaction
from django.dispatch import Signal, receiver
from django.utils import timezone

from portal.access import credential_limits
from portal.access.actors import Actor
from portal.access.backends import is_break_glass
from portal.access.models import LastSignIn
from portal.audit.services import record

# Sent after a break-glass account signed in with its password (portal.alerts listens).
break_glass_used = Signal()


def sign_in_method(request: Any, user: Any) -> str:
    method = getattr(request, "sign_in_method", None)
    if method:
        return method
    if settings.SSO_ENABLED and is_break_glass(user.get_username()):
        return LastSignIn.Method.BREAK_GLASS
    return LastSignIn.Method.PASSWORD


@receiver(user_logged_in)
def remember_sign_in(sender: Any, request: Any, user: Any, **kwargs: Any) -> None:
    method = sign_in_method(request, user)
    LastSignIn.objects.update_or_create(
        user=user, defaults={"at": timezone.now(), "method": method}
    )
    if method == LastSignIn.Method.BREAK_GLASS and request is not None:
        record(
            "auth.break_glass",
            actor=Actor.from_request(request),
            target_type="user",
            target_id=user.pk,
            params={"username": user.get_username()},
            reason="break-glass account signed in with its password",
        )
        transaction.on_commit(lambda: break_glass_used.send(sender=LastSignIn, user=user))


@receiver(user_login_failed)
def count_failed_sign_in(
    sender: Any, credentials: dict, request: Any = None, **kwargs: Any
) -> None:
    if request is not None:
        credential_limits.record_sign_in_failure(request, reason="wrong username or password")
