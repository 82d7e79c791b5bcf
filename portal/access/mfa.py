"""Second factor: TOTP (an authenticator app), enrolled on first sign-in."""

from __future__ import annotations

from typing import Any

import segno
from django.db import transaction
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.access.actors import Actor
from portal.audit.services import record

DEVICE_NAME = "authenticator app"


def confirmed_device(user: Any) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def pending_device(user: Any) -> TOTPDevice:
    """The unconfirmed device being enrolled (one per user, reused until confirmed)."""
    device = TOTPDevice.objects.filter(user=user, confirmed=False).first()
    return device or TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)


def qr_code_data_uri(device: TOTPDevice) -> str:
    return segno.make(device.config_url, error="m").svg_data_uri(scale=5)


def _clean(token: str) -> str:
    return "".join(token.split())[:10]


WRONG_CODE = "That code did not match. Codes change every 30 seconds; try the current one."
THROTTLED = "Too many wrong codes: wait a few seconds, then enter the current code."


def _check(device: TOTPDevice, token: str) -> str:
    """'' when the code is right, else why not. Wrong codes slow further tries down."""
    if not device.verify_is_allowed()[0]:
        return THROTTLED
    return "" if device.verify_token(_clean(token)) else WRONG_CODE


def verify(request: HttpRequest, token: str) -> str:
    """Check a code against the user's confirmed device and mark the session verified.
    Returns '' on success, else the reason for the person."""
    user = request.user
    device = confirmed_device(user)
    actor = Actor.from_request(request)
    problem = _check(device, token) if device is not None else WRONG_CODE
    if not problem:
        otp_login(request, device)
        record("auth.mfa", actor=actor, target_type="user", target_id=user.pk)
        return ""
    record("auth.mfa", actor=actor, target_type="user", target_id=user.pk, outcome="failure",
           reason=problem)
    return problem


def confirm_enrollment(request: HttpRequest, token: str) -> str:
    user = request.user
    device = pending_device(user)
    problem = _check(device, token)
    if problem:
        record("auth.mfa_enroll", actor=Actor.from_request(request), target_type="user",
               target_id=user.pk, outcome="failure", reason=problem)
        return problem
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        record("auth.mfa_enroll", actor=Actor.from_request(request), target_type="user",
               target_id=user.pk)
    otp_login(request, device)
    return ""


def reset(actor: Actor, user: Any) -> int:
    """Forget a user's devices (a lost phone); they enrol again at their next sign-in."""
    from portal.access.authz import require

    require(actor, "manage_users", action="user.reset_mfa", target_type="user",
            target_id=user.pk)
    with transaction.atomic():
        deleted, _ = TOTPDevice.objects.filter(user=user).delete()
        record("user.reset_mfa", actor=actor, target_type="user", target_id=user.pk,
               params={"username": user.get_username(), "devices": deleted})
    return deleted
