"""Who is acting: a signed-in person, an API token, a service client, or the system itself."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Permission
from django.db.models import Q
from django.http import HttpRequest

from portal.access.addresses import client_ip
from portal.access.roles import ROLES, permissions_of_scopes

SYSTEM_ROLE = "system"
CLIENT_ROLE = "service-client"


def role_of(user: Any) -> str:
    """The highest role group the user belongs to ('' for none). The role is all an account
    holds: Django's superuser flag counts for nothing here (and such an account cannot sign
    in, see backends.RolePermissionsBackend)."""
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return ""
    cached = getattr(user, "_portal_role", None)
    if cached is None:
        names = set(user.groups.values_list("name", flat=True))
        cached = next((role for role in reversed(ROLES) if role in names), "")
        user._portal_role = cached
    return cached


def holds(user: Any, codename: str) -> bool:
    """Whether the account's role group (or a grant of its own) holds `access.<codename>`.

    The one answer for people, asked by Actor.can and by the permission backends alike, and
    not through user.has_perm: Django answers True to everything for a superuser before it
    asks any backend, and the flag is no role here.
    """
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        return False
    held = getattr(user, "_portal_permissions", None)
    if held is None:
        held = frozenset(
            Permission.objects.filter(
                Q(group__user=user) | Q(user=user), content_type__app_label="access"
            ).values_list("codename", flat=True)
        )
        user._portal_permissions = held
    return codename in held


def forget_permissions(user: Any) -> None:
    """Drop what this user object remembers of its role and permissions (they changed)."""
    for cache in (
        "_portal_role",
        "_portal_permissions",
        "_perm_cache",
        "_user_perm_cache",
        "_group_perm_cache",
    ):
        user.__dict__.pop(cache, None)


@dataclass(frozen=True)
class Actor:
    kind: str  # "user", "token", "client" or "system"
    name: str
    role: str
    user: Any = None
    token: Any = None
    client: Any = None  # a ServiceClient (kind "client"); `token` is then its client token
    ip: str = ""
    user_agent: str = ""
    request_id: str = ""

    @property
    def actor_id(self) -> str:
        if self.client is not None:
            return str(self.client.pk)
        if self.token is not None:
            return str(self.token.pk)
        if self.user is not None:
            return str(self.user.pk)
        return ""

    def can(self, codename: str) -> bool:
        if self.kind == "system":
            return True
        if self.kind == "client":
            return (
                self.client is not None
                and self.client.is_active
                and codename in permissions_of_scopes(self.client.scopes)
            )
        if self.user is None or not self.user.is_active:
            return False
        if self.token is not None and not self.token.allows(codename):
            return False
        return holds(self.user, codename)

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        common = {
            "ip": client_ip(request),
            "user_agent": request.headers.get("User-Agent", "")[:300],
            "request_id": getattr(request, "request_id", ""),
        }
        token = getattr(request, "bearer_token", None)
        user = getattr(request, "user", None)
        if token is not None and token.client is not None:
            return cls(
                kind="client",
                name=token.client.name,
                role=CLIENT_ROLE,
                token=token,
                client=token.client,
                **common,
            )
        if token is not None:
            return cls(
                kind="token",
                name=token.display_name,
                role=role_of(token.user),
                user=token.user,
                token=token,
                **common,
            )
        if user is not None and user.is_authenticated:
            return cls(
                kind="user", name=user.get_username(), role=role_of(user), user=user, **common
            )
        return cls(kind="anonymous", name="anonymous", role="", **common)

    @classmethod
    def system(cls, name: str) -> Actor:
        """The portal itself: the scheduler, a worker, or a shell command.

        Someone with a shell on the deployment can do anything an admin can, and the commands
        are how the first admin is created, so commands act as the system, named after the
        operating-system account that ran them.
        """
        return cls(kind="system", name=name, role=SYSTEM_ROLE)

    @classmethod
    def command(cls, command_name: str) -> Actor:
        try:
            account = getpass.getuser()
        except (KeyError, OSError):
            account = "unknown"
        return cls.system(f"cli:{account}:{command_name}")
