"""Service clients: the Fleet services' API principals (create, rotate, revoke; their tokens
are bearer tokens like people's, authenticated by `bearer_tokens.authenticate`).

A client holds scopes, not a role. Each scope grants a fixed set of the portal's permission
codenames (roles.SCOPES), so the API's one permission check (`Actor.can`) serves people's tokens
and clients alike. Clients never reach the console: only the JSON API reads their tokens.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from portal.access import bearer_tokens
from portal.access.actors import Actor
from portal.access.authz import require
from portal.access.models import BearerToken, ServiceClient
from portal.access.roles import SCOPES
from portal.approvals import gate
from portal.audit.services import record

DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 365
DEFAULT_GRACE_HOURS = 24
MAX_GRACE_HOURS = 24 * 14
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


class ServiceClientError(Exception):
    """A request about a service client that cannot be carried out (the message says why)."""


def parse_scopes(scopes: list[str] | str) -> list[str]:
    if isinstance(scopes, str):
        scopes = scopes.split(",")
    cleaned = sorted({scope.strip() for scope in scopes if scope.strip()})
    unknown = [scope for scope in cleaned if scope not in SCOPES]
    if unknown:
        raise ServiceClientError(
            f"Unknown scopes: {', '.join(unknown)}; the scopes are {', '.join(SCOPES)}."
        )
    if not cleaned:
        raise ServiceClientError(f"Give at least one scope: {', '.join(SCOPES)}.")
    return cleaned


def _expiry(expires_days: int | None) -> datetime | None:
    if expires_days is None:
        return None
    if not 1 <= expires_days <= MAX_EXPIRY_DAYS:
        raise ServiceClientError(f"Expiry must be between 1 and {MAX_EXPIRY_DAYS} days.")
    return timezone.now() + timedelta(days=expires_days)


def _issue(
    client: ServiceClient, actor: Actor, expires_days: int | None
) -> tuple[BearerToken, str]:
    return bearer_tokens.issue(
        owner=client, created_by=actor.name, expires_at=_expiry(expires_days)
    )


def get_client(name: str) -> ServiceClient:
    try:
        return ServiceClient.objects.get(name=name)
    except ServiceClient.DoesNotExist:
        raise ServiceClientError(f"There is no service client named {name!r}.") from None


# A client that may send messages may need a second person's approval (approval policy).
SENDER_SCOPE = "messages:send"
CREATE_SENDER = "clients.create_sender"


def create_client(
    actor: Actor,
    name: str,
    scopes: list[str] | str,
    description: str = "",
    expires_days: int | None = DEFAULT_EXPIRY_DAYS,
) -> tuple[ServiceClient, str]:
    """Create a client and its first token; returns both (the raw token is shown once)."""
    require(
        actor,
        "manage_service_clients",
        action="service_client.create",
        target_type="service_client",
        target_id=name,
    )
    name = (name or "").strip()
    if not _NAME.match(name):
        raise ServiceClientError(
            "A client's name is 1-64 lower-case letters, digits and hyphens, e.g. 'fleet-api'."
        )
    scopes = parse_scopes(scopes)
    _expiry(expires_days)  # validate before writing anything
    if SENDER_SCOPE in scopes:
        gate.check(
            actor,
            CREATE_SENDER,
            {
                "name": name,
                "scopes": scopes,
                "description": description,
                "expires_days": expires_days,
            },
        )
    try:
        with transaction.atomic():
            client = ServiceClient.objects.create(
                name=name, scopes=scopes, description=description[:300], created_by=actor.name[:150]
            )
            token, raw = _issue(client, actor, expires_days)
            record(
                "service_client.create",
                actor=actor,
                target_type="service_client",
                target_id=client.pk,
                params={
                    "name": name,
                    "scopes": scopes,
                    "token_prefix": token.prefix,
                    "expires_days": expires_days,
                },
            )
    except IntegrityError:
        raise ServiceClientError(f"A service client named {name!r} already exists.") from None
    return client, raw


def rotate_client(
    actor: Actor,
    name: str,
    grace_hours: int = DEFAULT_GRACE_HOURS,
    expires_days: int | None = DEFAULT_EXPIRY_DAYS,
) -> tuple[BearerToken, str]:
    """Issue a new token; the current ones keep working for `grace_hours` more, then expire
    (0 ends them now). Returns the new token and its raw value (shown once)."""
    require(
        actor,
        "manage_service_clients",
        action="service_client.rotate",
        target_type="service_client",
        target_id=name,
    )
    if not 0 <= grace_hours <= MAX_GRACE_HOURS:
        raise ServiceClientError(f"The overlap must be between 0 and {MAX_GRACE_HOURS} hours.")
    _expiry(expires_days)
    with transaction.atomic():
        client = get_client(name)
        if not client.is_active:
            raise ServiceClientError(f"Service client {name!r} is revoked.")
        now = timezone.now()
        ends = now + timedelta(hours=grace_hours)
        current = (
            BearerToken.objects.select_for_update()
            .filter(client=client, revoked_at__isnull=True)
            .exclude(expires_at__lte=now)
        )
        old_prefixes = []
        for old in current:
            old_prefixes.append(old.prefix)
            if old.expires_at is None or old.expires_at > ends:
                BearerToken.objects.filter(pk=old.pk).update(expires_at=ends)
        token, raw = _issue(client, actor, expires_days)
        record(
            "service_client.rotate",
            actor=actor,
            target_type="service_client",
            target_id=client.pk,
            params={
                "name": name,
                "token_prefix": token.prefix,
                "old_tokens": old_prefixes,
                "old_valid_until": ends.isoformat(),
            },
        )
    return token, raw


def revoke_client(actor: Actor, name: str) -> ServiceClient:
    """Revoke a client: every token stops working at once."""
    require(
        actor,
        "manage_service_clients",
        action="service_client.revoke",
        target_type="service_client",
        target_id=name,
    )
    with transaction.atomic():
        client = get_client(name)
        now = timezone.now()
        if client.revoked_at is None:
            ServiceClient.objects.filter(pk=client.pk).update(revoked_at=now)
            client.revoked_at = now
        BearerToken.objects.filter(client=client, revoked_at__isnull=True).update(revoked_at=now)
        record(
            "service_client.revoke",
            actor=actor,
            target_type="service_client",
            target_id=client.pk,
            params={"name": name},
        )
    return client
