"""Second factor: TOTP (an authenticator app).

A password alone never enrols a device: whoever holds a password could otherwise bind their own
authenticator to an account that has none yet. Enrolment needs a one-time set-up link an admin
made (`portal_user enrol-link`, also printed by `portal_user create` and `reset-mfa`), opened in
the account's own signed-in session; accounts signed in with Microsoft enrol without one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import segno
from django.conf import settings
from django.core import signing
from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record

DEVICE_NAME = "authenticator app"
ENROL_LINK_SALT = "portal.access.mfa.enrol-link"
ENROL_LINK_HOURS = 24
ENROL_SESSION_KEY = "portal_mfa_enrol_user"
NO_LINK = (
    "This account has no authenticator yet. Ask an administrator for a set-up link "
    "(`portal_user enrol-link` on the server); it works once, for 24 hours."
)


def _enrol_state(user: Any) -> str:
    """Changes when a device is confirmed or the password changes: a used link is dead."""
    devices = ",".join(
        str(pk)
        for pk in TOTPDevice.objects.filter(user=user, confirmed=True)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    return hashlib.sha256(f"{user.pk}|{user.password}|{devices}".encode()).hexdigest()[:32]


def enrol_link(actor: Actor, user: Any) -> str:
    """A one-time link that lets `user` set up an authenticator (role-checked, audited)."""

    require(
        actor, "manage_users", action="user.mfa_enrol_link", target_type="user", target_id=user.pk
    )
    token = signing.dumps({"u": user.pk, "s": _enrol_state(user)}, salt=ENROL_LINK_SALT)
    with transaction.atomic():
        record(
            "user.mfa_enrol_link",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            params={"username": user.get_username(), "hours": ENROL_LINK_HOURS},
        )
    return settings.PUBLIC_BASE_URL + reverse("mfa_enrol", args=[token])


def accept_enrol_link(request: HttpRequest, token: str) -> str:
    """Open enrolment for the signed-in user if `token` is theirs and unused; '' or why not."""
    user = request.user
    try:
        data = signing.loads(token, salt=ENROL_LINK_SALT, max_age=ENROL_LINK_HOURS * 3600)
    except signing.SignatureExpired:
        problem = "This set-up link has expired; ask an administrator for a new one."
    except signing.BadSignature:
        problem = "This is not a valid set-up link."
    else:
        if data.get("u") != user.pk:
            problem = "This set-up link is for another account."
        elif data.get("s") != _enrol_state(user):
            problem = "This set-up link was already used; ask an administrator for a new one."
        else:
            problem = ""
    actor = Actor.from_request(request)
    if problem:
        record(
            "auth.mfa_enrol_link",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            outcome="failure",
            reason=problem,
        )
        return problem
    request.session[ENROL_SESSION_KEY] = user.pk
    record("auth.mfa_enrol_link", actor=actor, target_type="user", target_id=user.pk)
    return ""


def may_enrol(request: HttpRequest) -> bool:
    user = request.user
    return hasattr(user, "entra_account") or request.session.get(ENROL_SESSION_KEY) == user.pk


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
    record(
        "auth.mfa",
        actor=actor,
        target_type="user",
        target_id=user.pk,
        outcome="failure",
        reason=problem,
    )
    return problem


def confirm_enrollment(request: HttpRequest, token: str) -> str:
    user = request.user
    if not may_enrol(request):
        record(
            "auth.mfa_enroll",
            actor=Actor.from_request(request),
            target_type="user",
            target_id=user.pk,
            outcome="denied",
            reason="no set-up link",
        )
        return NO_LINK
    device = pending_device(user)
    problem = _check(device, token)
    if problem:
        record(
            "auth.mfa_enroll",
            actor=Actor.from_request(request),
            target_type="user",
            target_id=user.pk,
            outcome="failure",
            reason=problem,
        )
        return problem
    with transaction.atomic():
        device.confirmed = True
        device.save(update_fields=["confirmed"])
        record(
            "auth.mfa_enroll",
            actor=Actor.from_request(request),
            target_type="user",
            target_id=user.pk,
        )
    request.session.pop(ENROL_SESSION_KEY, None)
    otp_login(request, device)
    return ""


def reset(actor: Actor, user: Any) -> int:
    """Forget a user's devices (a lost phone); they enrol again with a new set-up link."""

    require(actor, "manage_users", action="user.reset_mfa", target_type="user", target_id=user.pk)
    with transaction.atomic():
        deleted, _ = TOTPDevice.objects.filter(user=user).delete()
        record(
            "user.reset_mfa",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            params={"username": user.get_username(), "devices": deleted},
        )
    return deleted
