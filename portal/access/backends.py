from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.backends import BaseBackend, ModelBackend

from portal.access.actors import role_of
from portal.access.roles import ADMIN


class AdminRoleBackend(BaseBackend):
    """The admin role may use every model in the Django admin.

    Model admins still narrow this down (the audit log is read-only, worker-owned state is
    read-only), and the portal's own actions stay governed by the role matrix.
    """

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return not perm.startswith("access.") and role_of(user_obj) == ADMIN

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return role_of(user_obj) == ADMIN


def is_break_glass(username: str) -> bool:
    return username.lower() in {name.lower() for name in settings.SSO_BREAK_GLASS_ACCOUNTS}


def password_allowed(user: Any) -> bool:
    """Local passwords: never for SSO-managed accounts; with SSO_ONLY, break-glass only."""
    if hasattr(user, "entra_account"):
        return False
    return not (settings.SSO_ENABLED and settings.SSO_ONLY) or is_break_glass(
        user.get_username())


class LocalPasswordBackend(ModelBackend):
    """Username + password, and the sessions it started (refused when the rule changes)."""

    def user_can_authenticate(self, user: Any) -> bool:
        return super().user_can_authenticate(user) and password_allowed(user)


class EntraBackend(ModelBackend):
    """Holds sessions started by "Sign in with Microsoft" (portal.access.sso).

    It authenticates nothing by itself: only the SSO callback logs people in with it, after
    the id token was validated.
    """

    def authenticate(self, request: Any, **credentials: Any) -> None:
        return None

    def user_can_authenticate(self, user: Any) -> bool:
        return (super().user_can_authenticate(user) and settings.SSO_ENABLED
                and hasattr(user, "entra_account"))
