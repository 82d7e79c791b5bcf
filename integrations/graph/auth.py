"""Access tokens for Graph: MSAL apps and app-only (client credentials) tokens.

The delegated Teams sender builds on these (the integration's teams_sender.py); the active
credential comes from the credential store registered in ports.py.

MSAL facts this module is built around (MSAL Python's documentation, "Acquire and cache tokens"):
- the ConfidentialClientApplication constructor does OIDC discovery over the network, so
  apps are built lazily on first use, never at import;
- the authority must be https; for non-Microsoft hosts (the emulator) `instance_discovery`
  must be False or MSAL asks login.microsoftonline.com about the host;
- `http_client` is our own Session (trust_env False) so REQUESTS_CA_BUNDLE cannot override
  MICROSOFT_CA_BUNDLE;
- the token cache lives in the app object: one app per process per (authority, client id,
  credential) keeps one token per process;
- MSAL caches identical 400 token responses for 60 s per app object, so verifying a candidate
  secret always uses a fresh app (no cache sharing) or the answer could be stale;
- `client_credential` is a secret (str), a certificate (`{"private_key", "public_certificate"}`:
  MSAL signs a PS256 client assertion with `x5t#S256`) or workload identity
  (`{"client_assertion": callable}`: MSAL calls it for every token request, so a token file
  that the platform rotates is read afresh each time).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from django.conf import settings

from integrations.graph import ports
from integrations.graph.errors import TokenError
from integrations.graph.http import build_session
from integrations.graph.ports import ClientCredential

# The logger keeps the name log pipelines and alerts already filter on.
logger = logging.getLogger("integrations.microsoft.auth")

# Hosts MSAL knows (public and national clouds): instance discovery is fine for these.
MICROSOFT_AUTHORITY_HOSTS = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.microsoftonline.us",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.de",
    }
)


def graph_resource() -> str:
    """`https://graph.microsoft.com` for real Graph; the emulator accepts the same audience."""
    return settings.MICROSOFT_GRAPH_RESOURCE


def app_scopes() -> list[str]:
    return [f"{graph_resource()}/.default"]


@dataclass(frozen=True)
class AppRegistration:
    """Where and as whom the portal asks for tokens: the configured app, or one being
    connected (connect_tenant acquires a token with the new values before switching)."""

    tenant_id: str
    client_id: str
    authority_host: str
    ca_bundle: str = ""

    @classmethod
    def configured(cls) -> AppRegistration:
        return cls(
            settings.MICROSOFT_TENANT_ID,
            settings.MICROSOFT_CLIENT_ID,
            settings.MICROSOFT_AUTHORITY_HOST,
            settings.MICROSOFT_CA_BUNDLE or "",
        )

    @property
    def authority(self) -> str:
        return f"{self.authority_host.rstrip('/')}/{self.tenant_id}"


def authority() -> str:
    return AppRegistration.configured().authority


def _check_configuration(app: AppRegistration) -> None:
    missing = [
        name
        for name, value in (
            ("MICROSOFT_TENANT_ID", app.tenant_id),
            ("MICROSOFT_CLIENT_ID", app.client_id),
        )
        if not value
    ]
    if missing:
        raise TokenError(f"{' and '.join(missing)} not set: the portal cannot ask for tokens.")
    if urlsplit(app.authority_host).scheme != "https":
        raise TokenError("MICROSOFT_AUTHORITY_HOST must be an https URL (MSAL refuses http).")


def credential_mismatch(tenant_id: str, client_id: str) -> str:
    """Why a credential recorded for (tenant_id, client_id) cannot be used with the configured
    tenant and client ("" = it can; blank recorded values are not checked)."""
    tenant = settings.MICROSOFT_TENANT_ID or ""
    client = settings.MICROSOFT_CLIENT_ID or ""
    if (tenant_id and tenant_id.lower() != tenant.lower()) or (
        client_id and client_id.lower() != client.lower()
    ):
        return (
            f"the stored secret is for tenant {tenant_id} / client {client_id}; run "
            f"connect_tenant (configured: tenant {tenant or '(unset)'} / client "
            f"{client or '(unset)'})"
        )
    return ""


def refuse_foreign_credential(tenant_id: str, client_id: str) -> None:
    """Raise TokenError when a secret of another app registration would be used: refused
    here instead of by Entra (AADSTS7000215), and without any request."""

    mismatch = credential_mismatch(tenant_id, client_id)
    if mismatch:
        raise TokenError(mismatch + ".", error="credential_mismatch")


def read_client_assertion() -> str:
    """The workload identity token (a JWT the platform projects into a file and rotates),
    read now. Raises TokenError naming the problem when the file is missing or empty."""
    path = settings.MICROSOFT_CLIENT_ASSERTION_FILE
    if not path:
        raise TokenError(
            "Workload identity is active but MICROSOFT_CLIENT_ASSERTION_FILE (or "
            "AZURE_FEDERATED_TOKEN_FILE) is not set.",
            error="no_assertion_file",
        )
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise TokenError(
            f"The workload identity token file {path} cannot be read ({exc.strerror}).",
            error="no_assertion_file",
        ) from None
    if not token:
        raise TokenError(
            f"The workload identity token file {path} is empty.", error="no_assertion_file"
        )
    return token


# The three ways to prove the app's identity, as MSAL takes them (a credential store builds
# its StoredCredential.client_credential with one of these).


def secret_credential(secret: str) -> ClientCredential:
    return secret


def certificate_credential(private_key_pem: str, certificate_pem: str) -> ClientCredential:
    # No "thumbprint": given the certificate, MSAL computes its SHA-256 thumbprint and signs
    # PS256 with x5t#S256 (a "thumbprint" would mean SHA-1 and RS256, kept for ADFS).
    return {"private_key": private_key_pem, "public_certificate": certificate_pem}


def client_assertion_credential() -> ClientCredential:
    # A callable, not a value: MSAL calls it for every token request, so the platform's
    # rotation of the token file is picked up.
    return {"client_assertion": read_client_assertion}


def build_app(
    credential: ClientCredential,
    *,
    token_cache: msal.TokenCache | None = None,
    registration: AppRegistration | None = None,
) -> msal.ConfidentialClientApplication:
    """A new MSAL app for `credential` (does OIDC discovery now). Raises TokenError."""

    app = registration or AppRegistration.configured()
    _check_configuration(app)
    host = (urlsplit(app.authority_host).hostname or "").lower()
    session = build_session()
    session.verify = app.ca_bundle or True
    try:
        return msal.ConfidentialClientApplication(
            app.client_id,
            client_credential=credential,
            authority=app.authority,
            http_client=session,
            instance_discovery=host in MICROSOFT_AUTHORITY_HOSTS,
            token_cache=token_cache,
        )
    except ValueError as exc:
        # Raised for a 4xx on OIDC discovery: in practice an unknown tenant (AADSTS90002).
        raise TokenError(
            f"The identity platform has no tenant {app.tenant_id!r} at "
            f"{app.authority_host} (AADSTS90002: check MICROSOFT_TENANT_ID and "
            f"MICROSOFT_AUTHORITY_HOST). {_scrub(str(exc), credential)[:300]}",
            aadsts=90002,
            error="invalid_tenant",
        ) from None
    except requests.RequestException as exc:
        raise TokenError(
            f"Could not reach the identity platform at {app.authority_host} "
            f"({type(exc).__name__}).",
            transient=True,
            error="unreachable",
        ) from None


def _scrub(text: str, credential: ClientCredential | None) -> str:
    # Only a secret could be echoed back; keys and assertions never appear in errors.
    return (
        text.replace(credential, "••••••") if isinstance(credential, str) and credential else text
    )


_AADSTS_MESSAGES = {
    7000215: "The client secret was rejected (AADSTS7000215): wrong value, or the secret ID "
    "was used instead of the secret value.",
    7000222: "The client secret has expired (AADSTS7000222): add a new secret in the app "
    "registration and rotate it here.",
    700016: "Application {client_id} was not found in tenant {tenant} (AADSTS700016): check "
    "MICROSOFT_CLIENT_ID and MICROSOFT_TENANT_ID, and that admin consent was granted.",
    90002: "Tenant {tenant} was not found (AADSTS90002): check MICROSOFT_TENANT_ID.",
    7000218: "No client secret was sent (AADSTS7000218): the credential store is empty.",
    1002012: "The scope was rejected (invalid_scope): client credentials need "
    "'<resource>/.default'.",
    70011: "The scope was rejected (invalid_scope): client credentials need '<resource>/.default'.",
    # Client assertions (certificate and workload identity credentials).
    700027: "The identity platform could not check the signature of the client assertion "
    "(AADSTS700027): the certificate is not uploaded to app {client_id} (compare its "
    "thumbprint in Entra ID), it has expired there, or the key does not match it.",
    700024: "The client assertion is outside its valid time (AADSTS700024): this machine's "
    "clock is off, or the workload identity token in the file has expired.",
    700021: "The client assertion names another application (AADSTS700021): its issuer and "
    "subject must both be the client id {client_id}.",
    700023: "The client assertion was made for another token endpoint (AADSTS700023): its "
    "audience must be the token endpoint of tenant {tenant}.",
    70021: "No federated credential of app {client_id} matches the workload identity token "
    "(AADSTS70021): its issuer, subject and audience must be registered on the app "
    "(Certificates & secrets → Federated credentials).",
    700211: "No federated credential of app {client_id} trusts the token's issuer "
    "(AADSTS700211): check the issuer URL registered on the app.",
    700212: "No federated credential of app {client_id} has the token's audience "
    "(AADSTS700212): the default is api://AzureADTokenExchange.",
    700213: "No federated credential of app {client_id} has the token's subject "
    "(AADSTS700213): for Kubernetes it is system:serviceaccount:NAMESPACE:NAME.",
    50027: "The client assertion is not a valid JWT (AADSTS50027).",
}


def token_error(
    result: dict[str, Any],
    *,
    credential: ClientCredential | None = None,
    registration: AppRegistration | None = None,
) -> TokenError:
    """Turn an MSAL error dict into a TokenError with an operator-friendly message."""
    app = registration or AppRegistration.configured()
    codes = result.get("error_codes") or []
    aadsts = int(codes[0]) if codes else None
    error = str(result.get("error") or "")
    template = _AADSTS_MESSAGES.get(aadsts or 0)
    if template is None and error == "invalid_scope":
        template = _AADSTS_MESSAGES[70011]
    if template:
        message = template.format(client_id=app.client_id, tenant=app.tenant_id)
    else:
        # First line only: the rest is trace/correlation ids and timestamps.
        description = str(result.get("error_description") or "").splitlines()
        message = f"The identity platform refused the token request: {error}" + (
            f" — {description[0][:300]}" if description else ""
        )
    transient = error in {"temporarily_unavailable", "server_error"} or aadsts in {429}
    retry_after = None
    if "retry_after" in result:
        try:
            retry_after = float(result["retry_after"])
        except (TypeError, ValueError):
            retry_after = None
    return TokenError(
        _scrub(message, credential),
        aadsts=aadsts,
        transient=transient,
        error=error,
        retry_after=retry_after,
    )


def _acquire_for_client(
    app: msal.ConfidentialClientApplication,
    credential: ClientCredential,
    registration: AppRegistration | None = None,
) -> dict[str, Any]:
    registration = registration or AppRegistration.configured()
    try:
        # MSAL is untyped: its answer is the token endpoint's JSON object (or None).
        result: dict[str, Any] | None = app.acquire_token_for_client(scopes=app_scopes())
    except msal.exceptions.MsalServiceError as exc:
        # MSAL raises for HTTP >= 500 from the token endpoint.
        raise TokenError(
            f"The identity platform failed: {_scrub(str(exc), credential)[:200]}",
            transient=True,
            error="server_error",
        ) from None
    except requests.RequestException as exc:
        raise TokenError(
            f"Could not reach the identity platform at {registration.authority_host} "
            f"({type(exc).__name__}).",
            transient=True,
            error="unreachable",
        ) from None
    if not result or "access_token" not in result:
        raise token_error(result or {}, credential=credential, registration=registration)
    return result


def token_claims(access_token: str) -> dict[str, Any]:
    """The JWT payload, decoded without verification: for display (roles), never for trust."""
    parts = access_token.split(".")
    if len(parts) < 2:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


# --------------------------------------------------------------------------- app tokens


@dataclass(frozen=True)
class ActiveCredential:
    credential_id: int
    fingerprint: str
    kind: str
    client_credential: ClientCredential
    resolved_at: float
    tenant_id: str = ""
    client_id: str = ""

    def refuse_if_foreign(self) -> None:
        """Checked on every call (settings can change under a cached credential)."""

        refuse_foreign_credential(self.tenant_id, self.client_id)


_lock = threading.RLock()
_active: ActiveCredential | None = None
_apps: dict[tuple[str, str, str], msal.ConfidentialClientApplication] = {}


def resolve_active() -> ActiveCredential:
    """The active credential (secret or key decrypted), re-read from the credential store
    every few seconds.

    Other processes see an activation within CREDENTIAL_RECHECK_SECONDS; meanwhile they keep
    using the previous credential, which stays valid during its grace period — the reason the
    grace period exists. The process that activated invalidates at once.
    """
    global _active
    ttl = float(settings.CREDENTIAL_RECHECK_SECONDS)
    with _lock:
        current = _active
        if current is not None and time.monotonic() - current.resolved_at < ttl:
            return current

    stored = ports.credential_store().active()
    resolved = ActiveCredential(
        stored.credential_id,
        stored.fingerprint,
        stored.kind,
        stored.client_credential,
        time.monotonic(),
        stored.tenant_id,
        stored.client_id,
    )
    with _lock:
        _active = resolved
    return resolved


def _app_for(active: ActiveCredential) -> msal.ConfidentialClientApplication:
    active.refuse_if_foreign()
    key = (authority(), settings.MICROSOFT_CLIENT_ID, active.fingerprint)
    with _lock:
        app = _apps.get(key)
        if app is None:
            # Drop apps for older credentials/authorities: one per process.
            _apps.clear()
            app = _apps[key] = build_app(active.client_credential)
        return app


def app_token_result() -> dict[str, Any]:
    """MSAL's result dict for an app-only Graph token (from cache when still valid)."""
    active = resolve_active()
    try:
        result = _acquire_for_client(_app_for(active), active.client_credential)
    except TokenError as exc:
        ports.report_token_outcome(ports.TokenOutcome(active.credential_id, error=exc))
        raise
    ports.report_token_outcome(
        ports.TokenOutcome(active.credential_id, from_cache=result.get("token_source") == "cache")
    )
    return result


def check_app_token() -> dict[str, Any]:
    """A token from the identity platform itself, never MSAL's cache: a cached token hides
    a refused credential for up to an hour."""
    drop_cached_app_token()
    return app_token_result()


def app_token() -> str:
    """An app-only access token for Graph. Raises TokenError."""
    return str(app_token_result()["access_token"])


def drop_cached_app_token() -> None:
    """Forget cached app tokens (after Graph said 401 InvalidAuthenticationToken)."""
    with _lock:
        apps = list(_apps.values())
    for app in apps:
        app.remove_tokens_for_client()


def invalidate() -> None:
    """Forget the active credential and every MSAL app (after activation or rollback)."""
    global _active
    with _lock:
        _active = None
        _apps.clear()
    ports.notify_invalidated()


def acquire_with(
    credential: ClientCredential, registration: AppRegistration | None = None
) -> dict[str, Any]:
    """A token with a candidate credential (and app registration), using a fresh MSAL app."""
    app = build_app(credential, token_cache=msal.TokenCache(), registration=registration)
    return _acquire_for_client(app, credential, registration)
