"""Access tokens for Graph: MSAL apps and app-only (client credentials) tokens.

The delegated Teams sender builds on these in teams_sender.py.

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
  secret always uses a fresh app (no cache sharing) or the answer could be stale.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from django.conf import settings

from integrations.microsoft.credential_store import active_credential
from integrations.microsoft.errors import TokenError
from integrations.microsoft.http import build_session
from integrations.microsoft.models import refuse_foreign_credential

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


def build_app(
    secret: str,
    *,
    token_cache: msal.TokenCache | None = None,
    registration: AppRegistration | None = None,
) -> msal.ConfidentialClientApplication:
    """A new MSAL app for `secret` (does OIDC discovery now). Raises TokenError."""

    app = registration or AppRegistration.configured()
    _check_configuration(app)
    host = (urlsplit(app.authority_host).hostname or "").lower()
    session = build_session()
    session.verify = app.ca_bundle or True
    try:
        return msal.ConfidentialClientApplication(
            app.client_id,
            client_credential=secret,
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
            f"MICROSOFT_AUTHORITY_HOST). {_scrub(str(exc), secret)[:300]}",
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


def _scrub(text: str, secret: str | None) -> str:
    return text.replace(secret, "••••••") if secret else text


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
}


def token_error(
    result: dict[str, Any],
    *,
    secret: str | None = None,
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
        _scrub(message, secret),
        aadsts=aadsts,
        transient=transient,
        error=error,
        retry_after=retry_after,
    )


def _acquire_for_client(
    app: msal.ConfidentialClientApplication,
    secret: str,
    registration: AppRegistration | None = None,
) -> dict[str, Any]:
    registration = registration or AppRegistration.configured()
    try:
        result = app.acquire_token_for_client(scopes=app_scopes())
    except msal.exceptions.MsalServiceError as exc:
        # MSAL raises for HTTP >= 500 from the token endpoint.
        raise TokenError(
            f"The identity platform failed: {_scrub(str(exc), secret)[:200]}",
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
        raise token_error(result or {}, secret=secret, registration=registration)
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
class ActiveSecret:
    credential_id: int
    fingerprint: str
    secret: str
    resolved_at: float
    tenant_id: str = ""
    client_id: str = ""

    def refuse_if_foreign(self) -> None:
        """Checked on every call (settings can change under a cached credential)."""

        refuse_foreign_credential(self.tenant_id, self.client_id)


_lock = threading.RLock()
_active: ActiveSecret | None = None
_apps: dict[tuple[str, str, str], msal.ConfidentialClientApplication] = {}


def resolve_active() -> ActiveSecret:
    """The active credential (secret decrypted), re-read from the database every few seconds.

    Other processes see an activation within CREDENTIAL_RECHECK_SECONDS; meanwhile they keep
    using the previous secret, which stays valid during its grace period — the reason the
    grace period exists. The process that activated invalidates at once.
    """
    global _active
    ttl = float(settings.CREDENTIAL_RECHECK_SECONDS)
    with _lock:
        current = _active
        if current is not None and time.monotonic() - current.resolved_at < ttl:
            return current

    credential = active_credential()
    resolved = ActiveSecret(
        credential.pk,
        credential.fingerprint,
        credential.secret_value(),
        time.monotonic(),
        credential.tenant_id,
        credential.client_id,
    )
    with _lock:
        _active = resolved
    return resolved


def _app_for(active: ActiveSecret) -> msal.ConfidentialClientApplication:
    active.refuse_if_foreign()
    key = (authority(), settings.MICROSOFT_CLIENT_ID, active.fingerprint)
    with _lock:
        app = _apps.get(key)
        if app is None:
            # Drop apps for older credentials/authorities: one per process.
            _apps.clear()
            app = _apps[key] = build_app(active.secret)
        return app


def app_token_result() -> dict[str, Any]:
    """MSAL's result dict for an app-only Graph token (from cache when still valid)."""
    active = resolve_active()
    return _acquire_for_client(_app_for(active), active.secret)


def app_token() -> str:
    """An app-only access token for Graph. Raises TokenError."""
    return app_token_result()["access_token"]


def drop_cached_app_token() -> None:
    """Forget cached app tokens (after Graph said 401 InvalidAuthenticationToken)."""
    with _lock:
        apps = list(_apps.values())
    for app in apps:
        app.remove_tokens_for_client()


# Caches built on the active credential elsewhere (the Teams sender's apps) register here, so
# invalidate() reaches them without this module importing theirs.
_on_invalidate: list[Callable[[], None]] = []


def on_invalidate(callback: Callable[[], None]) -> None:
    """Call `callback` whenever invalidate() runs (once per callback)."""
    if callback not in _on_invalidate:
        _on_invalidate.append(callback)


def invalidate() -> None:
    """Forget the active credential and every MSAL app (after activation or rollback)."""
    global _active
    with _lock:
        _active = None
        _apps.clear()
    for callback in list(_on_invalidate):
        callback()


def acquire_with_secret(secret: str, registration: AppRegistration | None = None) -> dict[str, Any]:
    """A token with a candidate secret (and app registration), using a fresh MSAL app."""
    app = build_app(secret, token_cache=msal.TokenCache(), registration=registration)
    return _acquire_for_client(app, secret, registration)
