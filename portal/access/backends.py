from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.backends import BaseBackend, ModelBackend
from django.http import HttpRequest

from portal.access.actors import holds, role_of
from portal.access.roles import ADMIN, PERMISSIONS

# The Django model permissions the admin role holds, one by one: looking at the portal's
# tables, and the two writes the admin makes through audited services (adding and changing a
# monitored user). Everything else -- accounts, roles, django-q2's schedules and queue,
# lockout records, the audit log -- changes only through portal services (role-checked,
# audited) or not at all. Admin actions call those services and check the role themselves.
ADMIN_MODEL_PERMISSIONS: frozenset[str] = frozenset(
    {
        "alerts.view_alert",
        "alerts.view_alertevent",
        "alerts.view_auditchaincheck",
        "access.view_bearertoken",
        "access.view_credentialfailure",
        "approvals.view_approvalpolicy",
        "approvals.view_approvalrequest",
        "audit.view_auditevent",
        "axes.view_accessattempt",
        "axes.view_accessfailurelog",
        "axes.view_accesslog",
        "jobs.view_bulkoperation",
        "jobs.view_job",
        "jobs.view_jobattempt",
        "jobs.view_pausedjobtype",
        "microsoft.add_monitoreduser",
        "microsoft.change_monitoreduser",
        "microsoft.view_credential",
        "microsoft.view_delegatedaccount",
        "microsoft.view_graphcall",
        "microsoft.view_lifecycleevent",
        "microsoft.view_monitoreduser",
        "microsoft.view_notificationinbox",
        "microsoft.view_outboundmessage",
        "microsoft.view_sendbudget",
        "microsoft.view_subscription",
        "microsoft.view_synceditem",
        "microsoft.view_syncrun",
        "microsoft.view_syncstate",
        "microsoft.view_webhookrejection",
        "jobs.view_workerping",
        "otp_totp.view_totpdevice",
        "runtime.view_runtimesetting",
    }
)


class AdminRoleBackend(BaseBackend):
    """The admin role holds ADMIN_MODEL_PERMISSIONS in the Django admin, and nothing more."""

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        return perm in ADMIN_MODEL_PERMISSIONS and role_of(user_obj) == ADMIN

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return role_of(user_obj) == ADMIN and any(
            perm.startswith(app_label + ".") for perm in ADMIN_MODEL_PERMISSIONS
        )


def is_break_glass(username: str) -> bool:
    return username.lower() in {name.lower() for name in settings.SSO_BREAK_GLASS_ACCOUNTS}


def password_allowed(user: Any) -> bool:
    """Local passwords: never for SSO-managed accounts; with SSO_ONLY, break-glass only."""
    if hasattr(user, "entra_account"):
        return False
    return not (settings.SSO_ENABLED and settings.SSO_ONLY) or is_break_glass(user.get_username())


class RolePermissionsBackend(ModelBackend):
    """Answers the role matrix (`access.*`, held by the role groups) and nothing else.

    A superuser account cannot authenticate (nor keep a session): Django's has_perm answers
    True to everything for one before any backend is asked, which would put the flag beside
    the role matrix. No portal path sets the flag; one set anyway raises the
    superuser_account alert, and `portal_user set-role` clears it."""

    def user_can_authenticate(self, user: Any) -> bool:
        return super().user_can_authenticate(user) and not getattr(user, "is_superuser", False)

    def has_perm(self, user_obj: Any, perm: str, obj: Any = None) -> bool:
        app_label, _, codename = perm.partition(".")
        return app_label == "access" and obj is None and holds(user_obj, codename)

    def has_module_perms(self, user_obj: Any, app_label: str) -> bool:
        return app_label == "access" and any(holds(user_obj, codename) for codename in PERMISSIONS)


class LocalPasswordBackend(RolePermissionsBackend):
    """Username + password, and the sessions it started (refused when the rule changes)."""

    def user_can_authenticate(self, user: Any) -> bool:
        return super().user_can_authenticate(user) and password_allowed(user)


class EntraBackend(RolePermissionsBackend):
    """Holds sessions started by "Sign in with Microsoft" (portal.access.sso).

    It authenticates nothing by itself: only the SSO callback logs people in with it, after
    the id token was validated.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **credentials: Any,
    ) -> None:
        return None

    def user_can_authenticate(self, user: Any) -> bool:
        return (
            super().user_can_authenticate(user)
            and settings.SSO_ENABLED
            and hasattr(user, "entra_account")
        )
