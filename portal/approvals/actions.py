"""The covered actions: how each is previewed, described and run once approved.

Each one's own service calls gate.check() (so console, API, commands and the admin cannot
diverge); here is what approvals needs to file and later run a request for it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model

from integrations.microsoft import bulk_kinds, credential_lifecycle, tenant
from integrations.microsoft.models import Credential, MonitoredUser, Subscription
from portal.access import api_tokens, service_clients, users
from portal.access.actors import Actor, role_of
from portal.access.roles import ADMIN
from portal.approvals.gate import SECRET, CoveredAction, register
from portal.jobs import services as job_services
from portal.jobs.services import JobFilter
from portal.recovery import services as recovery


def _job_filter(params: dict[str, Any]) -> JobFilter:
    raw = params.get("filter")
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError("filter must be an object of strings (status, job_type, error_signature)")
    unknown = set(raw) - {"status", "job_type", "error_signature"}
    if unknown:
        raise ValueError(f"unknown filter fields: {', '.join(sorted(unknown))}")
    return JobFilter(**raw)


def _describe_retry(params: dict[str, Any]) -> str:
    job_filter = _job_filter(params)
    parts = [f"Retry all {job_filter.status} jobs"]
    if job_filter.job_type:
        parts.append(f"of type {job_filter.job_type}")
    if job_filter.error_signature:
        parts.append(f"with error {job_filter.error_signature}")
    return " ".join(parts)


def _run_retry(actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    operation = job_services.start_retry_all(actor, _job_filter(params))
    return {"operation_id": operation.pk, "count": operation.total}


register(
    CoveredAction(
        key=job_services.RETRY_ALL_ACTION,
        label="Bulk retry of jobs (above the bulk threshold)",
        permission="retry_all_jobs",
        run=_run_retry,
        preview=lambda p: {"jobs matching": _job_filter(p).queryset().count()},
        describe=_describe_retry,
        bulk=True,
    )
)


def _hours(params: dict[str, Any]) -> int:
    hours = params.get("expiring_within_hours")
    if not isinstance(hours, int) or isinstance(hours, bool) or not 1 <= hours <= 24 * 8:
        raise ValueError("expiring_within_hours must be a whole number from 1 to 192")
    return hours


def _run_renew(actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    operation = bulk_kinds.start_bulk_renew(actor, _hours(params))
    return {"operation_id": operation.pk, "count": operation.total}


register(
    CoveredAction(
        key=bulk_kinds.BULK_RENEW_ACTION,
        label="Bulk renewal of subscriptions (above the bulk threshold)",
        permission="renew_subscription",
        run=_run_renew,
        preview=lambda p: {"subscriptions expiring": bulk_kinds.expiring(_hours(p)).count()},
        describe=lambda p: f"Renew every subscription expiring within {_hours(p)} hours",
        bulk=True,
    )
)


def _reset_sync(params: dict[str, Any]) -> bool:
    value = params.get("reset_sync", False)
    if not isinstance(value, bool):
        raise ValueError("reset_sync must be true or false")
    return value


register(
    CoveredAction(
        key="recovery.start",
        label="Complete system recovery",
        permission="run_recovery",
        run=lambda actor, p: {
            "session_id": recovery.start(actor, reset_sync=_reset_sync(p)),
        },
        preview=lambda p: {
            "reset sync state": _reset_sync(p),
            "active subscriptions": Subscription.objects.active().count(),
        },
        describe=lambda p: (
            "Complete system recovery"
            + (" including the reset of every user's sync state" if _reset_sync(p) else "")
        ),
    )
)


def _credential_id(params: dict[str, Any]) -> int:
    value = params.get("credential_id")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("credential_id must be a credential's number")
    return value


def _credential_preview(params: dict[str, Any]) -> dict[str, Any]:
    credential = Credential.objects.filter(pk=_credential_id(params)).first()
    if credential is None:
        return {"credential": "does not exist"}
    return {
        "credential": f"#{credential.pk} …{credential.fingerprint}",
        "state": credential.state,
        "verified": credential.is_verified,
    }


def _live_credentials(params: dict[str, Any]) -> dict[str, Any]:
    states = dict(
        Credential.objects.filter(
            state__in=[Credential.State.ACTIVE, Credential.State.GRACE]
        ).values_list("state", "pk")
    )
    return {
        "active credential": states.get(Credential.State.ACTIVE),
        "rollback target": states.get(Credential.State.GRACE),
    }


register(
    CoveredAction(
        key="credential.activate",
        label="Activate a credential",
        permission="rotate_credentials",
        run=lambda actor, p: {
            "credential_id": credential_lifecycle.activate(actor, _credential_id(p)).pk,
        },
        preview=_credential_preview,
        describe=lambda p: f"Activate credential #{_credential_id(p)}",
    )
)
register(
    CoveredAction(
        key="credential.rollback",
        label="Roll back to the previous credential",
        permission="rotate_credentials",
        run=lambda actor, p: {"credential_id": credential_lifecycle.rollback(actor).pk},
        preview=_live_credentials,
        describe=lambda p: "Roll back to the credential in its grace period",
    )
)
register(
    CoveredAction(
        key="credential.retire",
        label="Retire a credential",
        permission="rotate_credentials",
        run=lambda actor, p: {
            "credential_id": credential_lifecycle.retire(actor, _credential_id(p)).pk,
        },
        preview=_credential_preview,
        describe=lambda p: f"Retire credential #{_credential_id(p)}",
    )
)


def _text(params: dict[str, Any], key: str, default: str = "") -> str:
    value = params.get(key, default)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value


def _make_admin(actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    username = _text(params, "username")
    if params.get("new_account"):
        user, password = users.create_user(actor, username, ADMIN, email=_text(params, "email"))
        return {"user_id": user.pk, SECRET: password}
    return {"user_id": users.set_role(actor, username, ADMIN).pk}


def _current_role(params: dict[str, Any]) -> dict[str, Any]:
    user = get_user_model().objects.filter(username=_text(params, "username")).first()
    return {"current role": (role_of(user) or "none") if user else "no account yet"}


register(
    CoveredAction(
        key=users.MAKE_ADMIN,
        label="Give someone the admin role",
        permission="manage_users",
        run=_make_admin,
        preview=_current_role,
        describe=lambda p: (
            f"Create the admin account {_text(p, 'username')}"
            if p.get("new_account")
            else f"Give {_text(p, 'username')} the admin role"
        ),
    )
)


def _expires_days(params: dict[str, Any]) -> int | None:
    value = params.get("expires_days")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ValueError("expires_days must be a whole number or null")
    return value


def _scopes(params: dict[str, Any]) -> list[str]:
    value = params.get("scopes", [])
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise ValueError("scopes must be a list of strings")
    return value


def _create_token(actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    token, raw = api_tokens.create_token(
        actor,
        _text(params, "username"),
        _text(params, "name"),
        _scopes(params),
        _expires_days(params),
    )
    return {"token_id": token.pk, SECRET: raw}


register(
    CoveredAction(
        key=api_tokens.FOR_ANOTHER_PERSON,
        label="Create an API token for another person",
        permission="manage_api_tokens",
        run=_create_token,
        preview=_current_role,
        describe=lambda p: f"Create an API token for {_text(p, 'username')}",
    )
)


def _create_sender(actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    client, raw = service_clients.create_client(
        actor,
        _text(params, "name"),
        _scopes(params),
        _text(params, "description"),
        _expires_days(params),
    )
    return {"client_id": client.pk, SECRET: raw}


register(
    CoveredAction(
        key=service_clients.CREATE_SENDER,
        label="Create a service client that may send messages (messages:send)",
        permission="manage_service_clients",
        run=_create_sender,
        preview=lambda p: {"scopes": ", ".join(_scopes(p))},
        describe=lambda p: (
            f"Create the service client {_text(p, 'name')} ({', '.join(_scopes(p))})"
        ),
    )
)


def _refuse_to_run_later(actor: Actor, params: dict[str, Any]) -> dict[str, Any]:
    raise ValueError("the requester connects the tenant again, once approved")


register(
    CoveredAction(
        key=tenant.ACTION,
        label="Connect a tenant",
        permission=tenant.PERMISSION,
        # The new credential is never kept for later: the requester connects again, once.
        run=_refuse_to_run_later,
        preview=lambda p: {
            "tenant now": settings.MICROSOFT_TENANT_ID or "(none)",
            "subscriptions to delete": Subscription.objects.filter(graph_id__isnull=False).count(),
            "monitored users": MonitoredUser.objects.count(),
        },
        describe=lambda p: (
            f"Connect the portal to tenant {_text(p, 'tenant_id')} (app {_text(p, 'client_id')})"
        ),
        runs_on_approval=False,
    )
)
