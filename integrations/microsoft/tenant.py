"""Connect the portal to another tenant (the demo's emulator → a real one, or between tenants).

`manage.py connect_tenant` and the console's "Connect a tenant" page both call `prepare` then
`apply`:

1. `prepare` acquires a token with the new values first (a fresh MSAL app, nothing stored);
   if that fails nothing has changed. It then lists what will change, and — with
   `keep_monitored_users` — looks every monitored user up by UPN in the new tenant.
2. `apply` deletes the old tenant's subscriptions in Graph where that still works, then in one
   transaction (one audit event, `tenant.connect`): stores the new secret as the active
   credential for the new tenant and client and retires every other one, deletes the
   subscription rows, resets the sync states (delta links point at the old Graph), keeps or
   drops the synced items, re-points or drops the monitored users and disconnects the Teams
   sender (its refresh token belongs to the old authority). Then this process switches its
   settings and the new values are written where the portal reads them.

Other processes (web server, worker) still hold the old settings until restarted; from the
moment the new credential is active they refuse to ask for tokens ("the stored secret is for
tenant X / client Y": the Graph client's auth.refuse_foreign_credential), so nothing reaches
the old tenant.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from dotenv import dotenv_values

from integrations import graph
from integrations.graph import auth, http
from integrations.graph.errors import GraphError, TokenError
from integrations.graph.ports import ClientCredential
from integrations.microsoft import certificates, teams_sender
from integrations.microsoft.certificates import CertificateCredential
from integrations.microsoft.credential_lifecycle import MAX_SECRET_LENGTH
from integrations.microsoft.models import (
    Credential,
    DelegatedAccount,
    MonitoredUser,
    Subscription,
    SyncedItem,
    SyncState,
)
from portal.access.actors import Actor
from portal.access.authz import require
from portal.approvals import gate
from portal.audit.services import record
from portal.lib.crypto import encrypt, fingerprint

ACTION = "tenant.connect"
PERMISSION = "connect_tenant"
DEFAULT_AUTHORITY_HOST = "https://login.microsoftonline.com"
DEFAULT_GRAPH_URL = "https://graph.microsoft.com/v1.0"
# A tenant is a GUID or a verified domain; a client id is a GUID (the emulator's too).
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,99}$")
_CLIENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,99}$")
PROBE_TIMEOUT = 10.0


class ConnectError(Exception):
    """Connecting cannot go ahead as asked; nothing was changed (message is for the operator)."""


# What the new tenant's app registration is reached with: a client secret or a certificate.
NewCredential = str | CertificateCredential


def _fingerprint(credential: NewCredential) -> str:
    if isinstance(credential, CertificateCredential):
        return certificates.fingerprint(credential.certificate_pem)
    return fingerprint(credential)


def _client_credential(credential: NewCredential) -> ClientCredential:
    if isinstance(credential, CertificateCredential):
        return auth.certificate_credential(credential.private_key_pem, credential.certificate_pem)
    return credential


def _describe(credential: NewCredential) -> str:
    if isinstance(credential, CertificateCredential):
        return f"the certificate {credential.subject} (thumbprint {credential.thumbprint})"
    return f"the new secret …{fingerprint(credential)}"


@dataclass(frozen=True)
class TenantTarget:
    """The tenant settings to switch to (what `connect_tenant` takes)."""

    tenant_id: str
    client_id: str
    authority_host: str = DEFAULT_AUTHORITY_HOST
    graph_url: str = DEFAULT_GRAPH_URL
    ca_bundle: str = ""
    public_base_url: str = ""

    @property
    def registration(self) -> auth.AppRegistration:
        return auth.AppRegistration(
            self.tenant_id, self.client_id, self.authority_host, self.ca_bundle
        )

    def settings_values(self) -> dict[str, str]:
        """The settings (= environment variables) that make the portal use this tenant.

        MICROSOFT_CLIENT_SECRET is emptied: the secret lives in the credential store now, and
        the old one must not bootstrap anything."""
        values = {
            "MICROSOFT_TENANT_ID": self.tenant_id,
            "MICROSOFT_CLIENT_ID": self.client_id,
            "MICROSOFT_CLIENT_SECRET": "",
            "MICROSOFT_AUTHORITY_HOST": self.authority_host,
            "MICROSOFT_GRAPH_URL": self.graph_url,
            "MICROSOFT_CA_BUNDLE": self.ca_bundle,
        }
        if self.public_base_url:
            values["PUBLIC_BASE_URL"] = self.public_base_url
        return values


def _is_public_https(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" and bool(parts.hostname)


def clean_target(
    tenant_id: str,
    client_id: str,
    *,
    authority_host: str = "",
    graph_url: str = "",
    ca_bundle: str = "",
    public_base_url: str = "",
) -> TenantTarget:
    """Validate the operator's input into a TenantTarget. Raises ConnectError."""
    tenant_id, client_id = (tenant_id or "").strip(), (client_id or "").strip()
    authority_host = (authority_host or DEFAULT_AUTHORITY_HOST).strip().rstrip("/")
    graph_url = (graph_url or DEFAULT_GRAPH_URL).strip().rstrip("/")
    problems = []
    if not _TENANT_RE.match(tenant_id):
        problems.append("the tenant id must be the directory (tenant) GUID or a domain name")
    if not _CLIENT_RE.match(client_id):
        problems.append("the client id must be the application (client) GUID")
    for label, url in (("the authority host", authority_host), ("the Graph URL", graph_url)):
        if not _is_public_https(url):
            problems.append(f"{label} must be an https URL")
    if ca_bundle and not Path(ca_bundle).is_file():
        problems.append(f"the CA bundle {ca_bundle} is not a readable file")
    public_base_url = (public_base_url or "").strip().rstrip("/")
    if public_base_url and urlsplit(public_base_url).scheme not in {"http", "https"}:
        problems.append("the public base URL must be an http(s) URL")
    if problems:
        raise ConnectError("Cannot connect: " + "; ".join(problems) + ".")
    return TenantTarget(
        tenant_id, client_id, authority_host, graph_url, ca_bundle or "", public_base_url
    )


# --------------------------------------------------------------------------- the plan


@dataclass
class UserPlan:
    pk: int
    label: str
    lookup: str  # the UPN looked up in the new tenant
    new_id: str = ""
    new_upn: str = ""
    new_name: str = ""
    error: str = ""

    @property
    def found(self) -> bool:
        return bool(self.new_id)


@dataclass
class ConnectPlan:
    target: TenantTarget
    old: dict[str, str]
    secret_fingerprint: str
    credential_label: str
    roles: list[str]
    credentials_to_retire: list[str]
    subscriptions: int
    sync_states: int
    synced_items: int
    keep_monitored_users: bool
    drop_synced_items: bool
    users: list[UserPlan] = field(default_factory=list)
    teams_sender: str = ""
    secret_expires_at: datetime | None = None

    def lines(self) -> list[str]:
        """The preview, one change per line (what the command prints and the page shows)."""
        t = self.target
        kept = [u for u in self.users if u.found]
        dropped = [u for u in self.users if not u.found]
        lines = [
            f"Token: issued by {t.authority_host}/{t.tenant_id} for client {t.client_id} "
            f"(roles: {', '.join(self.roles) or 'none'}).",
            f"Tenant: {self.old['tenant_id'] or '(none)'} → {t.tenant_id}; client "
            f"{self.old['client_id'] or '(none)'} → {t.client_id}.",
            f"Identity platform: {self.old['authority_host']} → {t.authority_host}; Graph: "
            f"{self.old['graph_url']} → {t.graph_url}.",
            f"Active credential: {self.credential_label} becomes active"
            + (
                f"; retired: {', '.join(self.credentials_to_retire)}"
                if self.credentials_to_retire
                else ""
            )
            + ".",
            f"Subscriptions: {self.subscriptions} deleted (in the old tenant where it still "
            "answers, then in the database).",
            f"Sync states: {self.sync_states} reset (their delta links point at the old Graph).",
            f"Synced items: {self.synced_items} "
            + ("dropped." if self.drop_synced_items else "kept (history of the old tenant)."),
        ]
        if self.keep_monitored_users:
            lines.append(
                f"Monitored users: {len(kept)} re-resolved in the new tenant by UPN"
                + (f" ({', '.join(f'{u.label} → {u.new_id}' for u in kept)})" if kept else "")
                + f"; {len(dropped)} dropped"
                + (f" ({', '.join(f'{u.label}: {u.error}' for u in dropped)})" if dropped else "")
                + "."
            )
        else:
            lines.append(
                f"Monitored users: {len(self.users)} dropped "
                "(--keep-monitored-users re-resolves them by UPN instead)."
            )
        if self.teams_sender:
            lines.append(
                f"Teams sender: {self.teams_sender} disconnected (connect it again "
                "in the new tenant)."
            )
        return lines


def _old_settings() -> dict[str, str]:
    return {
        "tenant_id": settings.MICROSOFT_TENANT_ID or "",
        "client_id": settings.MICROSOFT_CLIENT_ID or "",
        "authority_host": settings.MICROSOFT_AUTHORITY_HOST,
        "graph_url": settings.MICROSOFT_GRAPH_URL,
    }


def _check_secret(secret: NewCredential) -> NewCredential:
    if isinstance(secret, CertificateCredential):
        return secret
    secret = (secret or "").strip()
    if not secret:
        raise ConnectError("The client secret is empty.")
    if len(secret) > MAX_SECRET_LENGTH:
        raise ConnectError("The secret is too long to be a client secret.")
    return secret


def _lookup_user(target: TenantTarget, token: str, upn: str) -> tuple[dict[str, Any], str]:
    """GET /users/{upn} in the new tenant with the new token: (user, "") or ({}, why not).

    Not through graph.request: the portal's Graph client still points at the old tenant until
    the switch, and this lookup decides what the switch does."""
    session = http.build_session()
    session.verify = target.ca_bundle or True
    try:
        response = session.get(
            f"{target.graph_url}/users/{quote(upn, safe='@')}",
            params={"$select": "id,userPrincipalName,displayName"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=PROBE_TIMEOUT,
        )
    except requests.RequestException as exc:
        return {}, f"Graph not reachable ({type(exc).__name__})"
    finally:
        session.close()
    if response.status_code == 200:
        return response.json(), ""
    if response.status_code == 404:
        return {}, "not found in the new tenant"
    return {}, f"lookup failed ({response.status_code})"


def prepare(
    actor: Actor,
    target: TenantTarget,
    secret: NewCredential,
    *,
    keep_monitored_users: bool = False,
    drop_synced_items: bool = False,
    secret_expires_at: datetime | None = None,
) -> ConnectPlan:
    """Token with the new values first, then the plan. Raises ConnectError (nothing changed)."""
    require(actor, PERMISSION, action=ACTION, target_type="tenant", target_id=target.tenant_id)
    secret = _check_secret(secret)
    try:
        result = auth.acquire_with(_client_credential(secret), target.registration)
    except TokenError as exc:
        raise ConnectError(
            f"No token with the new values, so nothing was changed: {exc.message}"
        ) from None
    token = result["access_token"]
    users = []
    for user in MonitoredUser.objects.order_by("pk"):
        lookup = user.upn or user.identifier
        plan = UserPlan(user.pk, str(user), lookup)
        if keep_monitored_users:
            data, plan.error = _lookup_user(target, token, lookup)
            plan.new_id = str(data.get("id") or "")
            plan.new_upn = str(data.get("userPrincipalName") or "")
            plan.new_name = str(data.get("displayName") or "")
            if not plan.new_id and not plan.error:
                plan.error = "no id in Graph's answer"
        users.append(plan)
    sender = teams_sender.current_delegated_account()
    live = Credential.objects.exclude(state=Credential.State.RETIRED).order_by("pk")
    return ConnectPlan(
        target=target,
        old=_old_settings(),
        secret_fingerprint=_fingerprint(secret),
        credential_label=_describe(secret),
        roles=sorted(auth.token_claims(token).get("roles") or []),
        credentials_to_retire=[f"#{c.pk} …{c.fingerprint} ({c.state})" for c in live],
        subscriptions=Subscription.objects.count(),
        sync_states=SyncState.objects.count(),
        synced_items=SyncedItem.objects.count(),
        keep_monitored_users=keep_monitored_users,
        drop_synced_items=drop_synced_items,
        users=users,
        teams_sender=sender.upn if sender is not None else "",
        secret_expires_at=secret_expires_at,
    )


# --------------------------------------------------------------------------- applying


@dataclass
class ConnectResult:
    plan: ConnectPlan
    credential: Credential
    remote_deleted: int
    remote_failed: list[str]
    settings_written: str  # the .env path, or "" when the values must be set by hand
    settings_to_set: dict[str, str]  # what the operator still has to set (environment)


def _delete_old_subscriptions() -> tuple[int, list[str]]:
    """DELETE every subscription in the old tenant while its settings are still in force;
    one that cannot be deleted expires there by itself (at most 3 days for Teams/mail)."""
    deleted, failed = 0, []
    for graph_id in (
        Subscription.objects.exclude(graph_id__isnull=True)
        .exclude(graph_id="")
        .values_list("graph_id", flat=True)
    ):
        try:
            with http.timeout_cap(PROBE_TIMEOUT):
                graph.delete(f"/subscriptions/{graph_id}", max_retries=0)
            deleted += 1
        except GraphError as exc:
            if getattr(exc, "status", None) == 404:
                deleted += 1  # already gone
                continue
            failed.append(f"{graph_id}: {exc}"[:300])
            if isinstance(exc, TokenError):
                # No token for the old tenant: no other delete will work either.
                failed.append("the rest skipped: no token for the old tenant")
                break
    return deleted, failed


def _switch_database(
    actor: Actor,
    plan: ConnectPlan,
    secret: NewCredential,
    remote_deleted: int,
    remote_failed: list[str],
) -> Credential:
    now = timezone.now()
    target = plan.target
    with transaction.atomic():
        retired = []
        for old in Credential.objects.select_for_update().exclude(state=Credential.State.RETIRED):
            retired.append(old.pk)
            old.state = Credential.State.RETIRED
            old.retired_at = now
            old.grace_until = None
            old.secret_encrypted = ""
            old.save(update_fields=["state", "retired_at", "grace_until", "secret_encrypted"])
        print_ = _fingerprint(secret)
        if isinstance(secret, CertificateCredential):
            material: dict[str, Any] = {
                "kind": Credential.Kind.CERTIFICATE,
                "secret_encrypted": encrypt(secret.private_key_pem),
                "certificate_pem": secret.certificate_pem,
                "thumbprint": secret.thumbprint,
                "subject": secret.subject[:300],
                "expires_at": secret.not_after,
            }
        else:
            material = {"secret_encrypted": encrypt(secret), "expires_at": plan.secret_expires_at}
        credential = Credential.objects.create(
            display_name=f"connect_tenant {now:%Y-%m-%d}",
            fingerprint=print_,
            state=Credential.State.ACTIVE,
            activated_at=now,
            last_verified_at=now,
            **material,
            created_by=actor.name[:150],
            tenant_id=target.tenant_id,
            client_id=target.client_id,
        )
        subscriptions = Subscription.objects.count()
        Subscription.objects.all().delete()
        items_dropped = SyncedItem.objects.all().delete()[0] if plan.drop_synced_items else 0
        kept = {u.pk: u for u in plan.users if plan.keep_monitored_users and u.found}
        dropped = [u.label for u in plan.users if u.pk not in kept]
        MonitoredUser.objects.exclude(pk__in=kept).delete()
        for user in kept.values():
            MonitoredUser.objects.filter(pk=user.pk).update(
                identifier=user.new_upn or user.lookup,
                graph_id=user.new_id,
                upn=user.new_upn,
                display_name=user.new_name,
                resolved_at=now,
                last_error="",
            )
        states = SyncState.objects.update(
            delta_link="",
            next_link="",
            round_kind="",
            token_obtained_at=None,
            reset_requested=True,
            lease_owner="",
            lease_expires_at=None,
            status=SyncState.Status.NEVER,
            last_error="",
            last_error_at=None,
            **({"item_count": 0} if plan.drop_synced_items else {}),
        )
        DelegatedAccount.objects.filter(disconnected_at__isnull=True).update(
            disconnected_at=now, token_cache_encrypted=""
        )
        record(
            ACTION,
            actor=actor,
            target_type="tenant",
            target_id=target.tenant_id,
            params={
                "from": plan.old,
                "to": {
                    "tenant_id": target.tenant_id,
                    "client_id": target.client_id,
                    "authority_host": target.authority_host,
                    "graph_url": target.graph_url,
                },
                "credential": credential.pk,
                "credential_kind": credential.kind,
                "fingerprint": print_,
                "retired_credentials": retired,
                "subscriptions_deleted": subscriptions,
                "subscriptions_deleted_in_old_tenant": remote_deleted,
                "subscriptions_left_in_old_tenant": len(remote_failed),
                "sync_states_reset": states,
                "synced_items_dropped": items_dropped,
                "monitored_users_kept": [u.new_upn or u.lookup for u in kept.values()],
                "monitored_users_dropped": dropped,
                "teams_sender_disconnected": plan.teams_sender,
            },
        )
        transaction.on_commit(auth.invalidate)
        transaction.on_commit(graph.reset_state)
    return credential


def switch_process_settings(target: TenantTarget) -> None:
    """This process uses the new tenant from now on (others when restarted)."""
    for name, value in target.settings_values().items():
        setattr(settings, name, value)
    host = urlsplit(target.authority_host).hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    settings.USING_EMULATOR = loopback
    if not loopback and "emulator" in (settings.TENANT_LABEL or ""):
        settings.TENANT_LABEL = target.tenant_id
    auth.invalidate()
    graph.reset_state()


def write_settings(values: dict[str, str], path: Path | str | None) -> tuple[str, dict[str, str]]:
    """Write `values` into the .env (replacing or appending lines) when there is one.

    Returns (the path written or "", the values still to set by hand): without a .env, or for
    variables set in the real environment (which win over .env), the operator sets them."""
    if path is None or not Path(path).exists():
        return "", dict(values)
    path = Path(path)
    current = dotenv_values(path)
    # load_dotenv never overrides: a value in os.environ that differs from the file's came
    # from the real environment and keeps winning.
    overridden = {
        k: v
        for k, v in values.items()
        if k in os.environ and os.environ[k] != (current.get(k) or "") and os.environ[k] != v
    }
    lines = path.read_text(encoding="utf-8").splitlines()
    pending = dict(values)
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip() if "=" in line else ""
        if key in pending and not line.lstrip().startswith("#"):
            out.append(f"{key}={pending.pop(key)}")
        else:
            out.append(line)
    if pending:
        out += ["", "# Written by connect_tenant."] + [f"{k}={v}" for k, v in pending.items()]
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path), overridden


def approval_params(plan: ConnectPlan) -> dict[str, Any]:
    """What an approval of this connection names (never the credential, only its fingerprint)."""
    return {
        "tenant_id": plan.target.tenant_id,
        "client_id": plan.target.client_id,
        "authority_host": plan.target.authority_host,
        "graph_url": plan.target.graph_url,
        "credential": plan.secret_fingerprint,
        "keep_monitored_users": plan.keep_monitored_users,
        "drop_synced_items": plan.drop_synced_items,
    }


def apply(actor: Actor, plan: ConnectPlan, secret: NewCredential) -> ConnectResult:
    """Carry out a prepared plan (see the module docstring)."""
    require(actor, PERMISSION, action=ACTION, target_type="tenant", target_id=plan.target.tenant_id)
    secret = _check_secret(secret)
    if _fingerprint(secret) != plan.secret_fingerprint:
        raise ConnectError("The credential differs from the one the preview was made with.")
    gate.check(actor, ACTION, approval_params(plan))
    remote_deleted, remote_failed = _delete_old_subscriptions()
    credential = _switch_database(actor, plan, secret, remote_deleted, remote_failed)
    # Written before this process switches: write_settings tells the real environment from
    # the .env by what is in os.environ now.
    written, to_set = write_settings(plan.target.settings_values(), settings.DOTENV_FILE)
    switch_process_settings(plan.target)
    return ConnectResult(plan, credential, remote_deleted, remote_failed, written, to_set)
