"""People's API tokens: create and revoke (the JSON API authenticates them with
`bearer_tokens.authenticate`, like service clients' tokens)."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from portal.access import bearer_tokens
from portal.access.actors import Actor, role_of
from portal.access.authz import require
from portal.access.models import BearerToken
from portal.access.roles import MATRIX, PERMISSIONS
from portal.approvals import gate
from portal.audit.services import record

MAX_EXPIRY_DAYS = 365
DEFAULT_EXPIRY_DAYS = 90


class TokenError(Exception):
    """A token request that cannot be carried out (the message says why)."""


# Creating a token for someone else may need a second person's approval (approval policy).
FOR_ANOTHER_PERSON = "tokens.create_for_other"


def create_token(
    actor: Actor,
    username: str,
    name: str,
    scopes: list[str] | None = None,
    expires_days: int | None = DEFAULT_EXPIRY_DAYS,
) -> tuple[BearerToken, str]:
    """Create a token for a user; returns it and the raw value (shown once, never stored)."""
    require(
        actor,
        "manage_api_tokens",
        action="api_token.create",
        target_type="user",
        target_id=username,
    )
    try:
        user = get_user_model().objects.get(username=username, is_active=True)
    except get_user_model().DoesNotExist:
        raise TokenError(f"No active user named {username!r}.") from None
    scopes = sorted(set(scopes or []))
    unknown = [scope for scope in scopes if scope not in PERMISSIONS]
    if unknown:
        raise TokenError(f"Unknown scopes: {', '.join(unknown)}.")
    role = role_of(user)
    beyond_role = [scope for scope in scopes if scope not in MATRIX.get(role, ())]
    if beyond_role:
        raise TokenError(
            f"{username} (role {role or 'none'}) may not {', '.join(beyond_role)}; a token "
            "cannot carry more than its user's role."
        )
    if expires_days is not None and not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise TokenError(f"Expiry must be between 1 and {MAX_EXPIRY_DAYS} days.")
    if actor.user is None or actor.user.get_username() != username:
        gate.check(
            actor,
            FOR_ANOTHER_PERSON,
            {"username": username, "name": name, "scopes": scopes, "expires_days": expires_days},
        )
    with transaction.atomic():
        token, raw = bearer_tokens.issue(
            owner=user,
            name=name or "API token",
            scopes=scopes,
            created_by=actor.name,
            expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
        )
        record(
            "api_token.create",
            actor=actor,
            target_type="api_token",
            target_id=token.pk,
            params={
                "user": username,
                "name": token.name,
                "prefix": token.prefix,
                "scopes": scopes or "role",
                "expires_days": expires_days,
            },
        )
    return token, raw


def revoke_token(actor: Actor, token_id: int) -> BearerToken:
    """Revoke a person's token (a service client's tokens end with its rotation or revocation)."""
    require(
        actor,
        "manage_api_tokens",
        action="api_token.revoke",
        target_type="api_token",
        target_id=token_id,
    )
    with transaction.atomic():
        try:
            token = BearerToken.objects.of_people().select_for_update().get(pk=token_id)
        except BearerToken.DoesNotExist:
            raise TokenError(f"There is no API token #{token_id}.") from None
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
        record(
            "api_token.revoke",
            actor=actor,
            target_type="api_token",
            target_id=token.pk,
            params={"prefix": token.prefix, "user": token.owner_name},
        )
    return token
