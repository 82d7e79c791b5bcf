"""Portal accounts: create, change role, deactivate. Role-checked and audited."""

from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AbstractUser, Group
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.exceptions import ValidationError
from django.db import transaction

from portal.access.actors import Actor, forget_permissions, role_of
from portal.access.authz import require
from portal.access.roles import ADMIN, ROLES
from portal.approvals import gate
from portal.audit.services import record

# Giving someone the admin role may need a second person's approval (approval policy).
MAKE_ADMIN = "people.make_admin"


class UserError(Exception):
    """A request about a portal account that cannot be carried out (the message says why)."""


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"Unknown role {role!r}; choose one of {', '.join(ROLES)}.")


def apply_role(user: AbstractUser, role: str) -> None:
    """Make `role` the user's only role group ('' removes every role). Not audited: callers
    record why (an admin's choice, or what Entra said)."""
    user.groups.remove(*Group.objects.filter(name__in=ROLES))
    if role:
        user.groups.add(Group.objects.get(name=role))
    forget_permissions(user)


def create_user(
    actor: Actor, username: str, role: str, password: str | None = None, email: str = ""
) -> tuple[AbstractBaseUser, str]:
    """Create an account with one role. Returns the user and the password (generated if None)."""
    require(actor, "manage_users", action="user.create", target_type="user", target_id=username)
    _check_role(role)
    User = get_user_model()
    username = username.strip()
    if not username:
        raise UserError("A username is required.")
    if User.objects.filter(username__iexact=username).exists():
        raise UserError(f"A user named {username!r} already exists.")
    if role == ADMIN:
        gate.check(actor, MAKE_ADMIN, {"username": username, "new_account": True, "email": email})
    password = password or generate_password()
    candidate = User(username=username, email=email)
    try:
        validate_password(password, candidate)
    except ValidationError as exc:
        raise UserError("The password is too weak: " + " ".join(exc.messages)) from None
    with transaction.atomic():
        user = User.objects.create_user(username=username, email=email, password=password)
        apply_role(user, role)
        record(
            "user.create",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            params={"username": username, "role": role},
        )
    return user, password


def is_sso_managed(user: AbstractBaseUser) -> bool:
    return hasattr(user, "entra_account")


def get_user(username: str) -> AbstractUser:
    try:
        return get_user_model().objects.get(username=username)
    except get_user_model().DoesNotExist:
        raise UserError(f"No user named {username!r}.") from None


def set_role(actor: Actor, username: str, role: str) -> AbstractBaseUser:
    """Give the account this one role. A superuser flag (which no portal path sets, and which
    grants nothing here) is cleared on the way: the role is all the account holds."""
    require(actor, "manage_users", action="user.set_role", target_type="user", target_id=username)
    _check_role(role)
    user = get_user(username)
    if is_sso_managed(user):
        raise UserError(
            f"{username} signs in with Microsoft: their role comes from the app "
            "roles assigned in Entra ID. Change it there (Enterprise applications "
            "→ the portal → Users and groups); it applies at their next sign-in or "
            "role re-check."
        )
    before = role_of(user)
    params: dict[str, object] = {"username": username, "before": before, "after": role}
    if role == ADMIN and before != ADMIN:
        gate.check(actor, MAKE_ADMIN, {"username": username})
    with transaction.atomic():
        apply_role(user, role)
        if (
            get_user_model()
            .objects.filter(pk=user.pk, is_superuser=True)
            .update(is_superuser=False)
        ):
            params["superuser_flag_cleared"] = True
        record("user.set_role", actor=actor, target_type="user", target_id=user.pk, params=params)
    return user


def set_password(
    actor: Actor, username: str, password: str | None = None
) -> tuple[AbstractBaseUser, str]:
    """Give a user a new password (generated if None). Returns the user and the password.

    Their other sessions end with it: Django signs sessions with a hash of the password."""
    require(
        actor, "manage_users", action="user.set_password", target_type="user", target_id=username
    )
    user = get_user(username)
    if is_sso_managed(user):
        raise UserError(
            f"{username} signs in with Microsoft and has no portal password: reset it in Entra ID."
        )
    generated = not password
    password = password or generate_password()
    try:
        validate_password(password, user)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise UserError("The password is too weak: " + " ".join(exc.messages)) from None
    with transaction.atomic():
        user.set_password(password)
        user.save(update_fields=["password"])
        record(
            "user.set_password",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            params={"username": username, "generated": generated},
        )
    return user, password


def deactivate(actor: Actor, username: str) -> AbstractBaseUser:
    require(actor, "manage_users", action="user.deactivate", target_type="user", target_id=username)
    user = get_user(username)
    if actor.user is not None and actor.user.pk == user.pk:
        raise UserError("You cannot deactivate your own account.")
    with transaction.atomic():
        user.is_active = False
        user.save(update_fields=["is_active"])
        # Sign the account out everywhere.

        for session in Session.objects.all().iterator():
            if session.get_decoded().get("_auth_user_id") == str(user.pk):
                session.delete()
        record(
            "user.deactivate",
            actor=actor,
            target_type="user",
            target_id=user.pk,
            params={"username": username},
        )
    return user
