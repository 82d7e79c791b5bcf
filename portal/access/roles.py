"""The role matrix: the one place that says which role may do what.

Roles are Django groups (kept in step with this module by a data migration and on every
`migrate`). Each action is a custom permission `access.<codename>`; roles are cumulative.
docs/security.md prints this matrix (`python manage.py portal_roles` prints it; a test keeps
them equal).
"""

from __future__ import annotations

VIEWER, SUPPORT, OPERATOR, ADMIN = "viewer", "support", "operator", "admin"
ROLES: tuple[str, ...] = (VIEWER, SUPPORT, OPERATOR, ADMIN)

# codename -> what it lets a person do (also the permission's display name).
PERMISSIONS: dict[str, str] = {
    "view_console": "See the console: health, queues, subscriptions, sync state",
    "verify_integration": "Run the integration checklist",
    "retry_job": "Retry one failed or dead job",
    "sync_delta": "Run a delta sync for one user",
    "acknowledge_alerts": "Acknowledge or snooze an alert",
    "snooze_security_alerts": "Snooze a security alert (audit chain, break-glass, superuser)",
    "view_audit": "Read the audit log",
    "retry_all_jobs": "Retry all jobs matching a filter",
    "discard_job": "Discard a job",
    "pause_processing": "Pause and resume processing (per job type, and the notification drain)",
    "sync_full": "Run a full sync for a user",
    "sync_reset": "Reset a user's sync state",
    "manage_monitored_users": "Add and remove monitored users",
    "renew_subscription": "Renew a webhook subscription",
    "recreate_subscription": "Recreate a webhook subscription",
    "delete_subscription": "Delete a webhook subscription",
    "setup_subscriptions": "Set up all webhook subscriptions",
    "cleanup_subscriptions": "Clean up expired and orphaned subscriptions",
    "change_runtime_settings": "Change runtime settings (real-time sync, intervals, thresholds)",
    "export_audit": "Export the audit log",
    "view_secrets_metadata": "See the credential inventory (never secret values)",
    "rotate_credentials": "Rotate the client secret and connect the Teams sender",
    "manage_users": "Create users, change roles, deactivate users",
    "manage_api_tokens": "Create and revoke API tokens",
    "run_recovery": "Run the complete system recovery",
    "use_django_admin": "Use the Django admin at /admin/",
    "view_messages": "See outbound messages: status, recipients, errors (not their text)",
    "read_events": "Read the event feed",
    "view_message_bodies": "Read the subject and text of outbound messages",
    "send_messages": "Send, resend and cancel e-mails and Teams messages",
    "manage_service_clients": "Create, rotate and revoke service clients",
    "manage_event_endpoints": "Create, change, pause and replay event endpoints",
    "connect_tenant": "Connect the portal to another tenant (its credentials; the old data reset)",
    "manage_approvals": "Set the approval policy; run a covered action without approval "
    "(break glass) and review such runs",
}

_GRANTS: dict[str, tuple[str, ...]] = {
    VIEWER: ("view_console", "view_messages", "read_events"),
    SUPPORT: ("verify_integration", "retry_job", "sync_delta", "acknowledge_alerts", "view_audit"),
    OPERATOR: (
        "retry_all_jobs",
        "discard_job",
        "pause_processing",
        "sync_full",
        "sync_reset",
        "manage_monitored_users",
        "renew_subscription",
        "recreate_subscription",
        "delete_subscription",
        "setup_subscriptions",
        "cleanup_subscriptions",
        "change_runtime_settings",
        "export_audit",
        "view_message_bodies",
        "send_messages",
    ),
    ADMIN: (
        "snooze_security_alerts",
        "view_secrets_metadata",
        "rotate_credentials",
        "manage_users",
        "manage_api_tokens",
        "run_recovery",
        "use_django_admin",
        "manage_service_clients",
        "manage_event_endpoints",
        "connect_tenant",
        "manage_approvals",
    ),
}


def _cumulative() -> dict[str, frozenset[str]]:
    matrix: dict[str, frozenset[str]] = {}
    granted: set[str] = set()
    for role in ROLES:
        granted |= set(_GRANTS[role])
        matrix[role] = frozenset(granted)
    return matrix


MATRIX: dict[str, frozenset[str]] = _cumulative()


# A service client holds scopes instead of a role; each scope grants these permissions.
SCOPES: dict[str, tuple[str, ...]] = {
    "messages:send": ("send_messages",),
    "messages:read": ("view_messages", "view_message_bodies"),
    "events:read": ("read_events",),
    "events:manage": ("manage_event_endpoints", "read_events"),
}


def permissions_of_scopes(scopes: list[str]) -> frozenset[str]:
    return frozenset(codename for scope in scopes for codename in SCOPES.get(scope, ()))


def permissions_of(role: str) -> frozenset[str]:
    return MATRIX.get(role, frozenset())


def matrix_markdown() -> str:
    header = "| action | " + " | ".join(ROLES) + " |"
    lines = [header, "|---|" + "---|" * len(ROLES)]
    for codename, label in PERMISSIONS.items():
        marks = " | ".join("✔" if codename in MATRIX[role] else "" for role in ROLES)
        lines.append(f"| {label} (`{codename}`) | {marks} |")
    return "\n".join(lines)
