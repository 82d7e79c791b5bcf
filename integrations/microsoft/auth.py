"""Access tokens for Graph: app-only (client credentials) and the delegated Teams sender.

MSAL facts this module is built around (graph-reference.md §7.2, stack-notes.md §3/§9):
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
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msal
import requests
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from integrations.microsoft.errors import TokenError

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
# Delegated scopes for the Teams sender; MSAL adds openid/profile/offline_access itself and
# refuses them if passed (that is how we get a refresh token). Chat.Create: a message "toUser"
# finds or creates the 1:1 chat with that user.
DELEGATED_SCOPES = ("ChatMessage.Send", "ChannelMessage.Send", "Chat.Create", "User.Read")


def graph_resource() -> str:
    """`https://graph.microsoft.com` for real Graph; the emulator accepts the same audience."""
    return getattr(settings, "MICROSOFT_GRAPH_RESOURCE", "https://graph.microsoft.com")


def app_scopes() -> list[str]:
    return [f"{graph_resource()}/.default"]


def delegated_scopes() -> list[str]:
    return [f"{graph_resource()}/{scope}" for scope in DELEGATED_SCOPES]


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
    from integrations.microsoft.graph import build_session

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
class _Active:
    credential_id: int
    fingerprint: str
    secret: str
    resolved_at: float
    tenant_id: str = ""
    client_id: str = ""

    def refuse_if_foreign(self) -> None:
        """Checked on every call (settings can change under a cached credential)."""
        from integrations.microsoft.models import refuse_foreign_credential

        refuse_foreign_credential(self.tenant_id, self.client_id)


_lock = threading.RLock()
_active: _Active | None = None
_apps: dict[tuple[str, str, str], msal.ConfidentialClientApplication] = {}


def _resolve_active() -> _Active:
    """The active credential, re-read from the database at most every few seconds.

    Other processes see an activation within CREDENTIAL_RECHECK_SECONDS; meanwhile they keep
    using the previous secret, which stays valid during its grace period — the reason the
    grace period exists. The process that activated invalidates at once.
    """
    global _active
    ttl = float(getattr(settings, "CREDENTIAL_RECHECK_SECONDS", 30))
    with _lock:
        current = _active
        if current is not None and time.monotonic() - current.resolved_at < ttl:
            return current
    from integrations.microsoft.credentials import active_credential

    credential = active_credential()
    resolved = _Active(
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


def _app_for(active: _Active) -> msal.ConfidentialClientApplication:
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
    active = _resolve_active()
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


def invalidate() -> None:
    """Forget the active credential and every MSAL app (after activation or rollback)."""
    global _active
    with _lock:
        _active = None
        _apps.clear()
        _delegated.clear()


def acquire_with_secret(secret: str, registration: AppRegistration | None = None) -> dict[str, Any]:
    """A token with a candidate secret (and app registration), using a fresh MSAL app."""
    app = build_app(secret, token_cache=msal.TokenCache(), registration=registration)
    return _acquire_for_client(app, secret, registration)


# --------------------------------------------------------------------------- delegated


_delegated: dict[
    tuple[str, str, str],
    tuple[msal.ConfidentialClientApplication, msal.SerializableTokenCache, int, int],
] = {}


def _redirect_uri(request_or_redirect_uri: HttpRequest | str) -> str:
    if isinstance(request_or_redirect_uri, str):
        return request_or_redirect_uri
    path = getattr(
        settings, "MICROSOFT_DELEGATED_REDIRECT_PATH", "/credentials/teams-sender/callback"
    )
    return request_or_redirect_uri.build_absolute_uri(path)


def start_delegated_connect(
    request_or_redirect_uri: HttpRequest | str,
    *,
    login_hint: str | None = None,
    prompt: str | None = "select_account",
) -> tuple[str, dict[str, Any]]:
    """Begin "Connect Teams sender account": (URL to send the admin's browser to, flow).

    Keep `flow` server-side (the session) and hand it to `complete_delegated_connect` with the
    query parameters of the redirect. It holds the PKCE verifier and state, not secrets.
    """
    active = _resolve_active()
    active.refuse_if_foreign()
    app = build_app(active.secret)
    with warnings.catch_warnings():
        # MSAL recommends response_mode=form_post, but that is a cross-site POST to the
        # console, which carries no SameSite=Lax session cookie — and the flow lives in the
        # session. The query mode is protected by PKCE plus the state check instead.
        warnings.filterwarnings("ignore", message="response_mode='form_post'")
        flow = app.initiate_auth_code_flow(
            scopes=delegated_scopes(),
            redirect_uri=_redirect_uri(request_or_redirect_uri),
            login_hint=login_hint,
            prompt=prompt,
            response_mode="query",
        )
    if "auth_uri" not in flow:
        raise token_error(flow, secret=active.secret)
    return flow["auth_uri"], flow


def complete_delegated_connect(
    actor: Any, flow: dict[str, Any], query_params: dict[str, Any]
) -> Any:
    """Redeem the authorization code and store the sender's token cache, encrypted.

    Requires `rotate_credentials`; audited as `teams_sender.connect`. Any previously connected
    sender is marked disconnected in the same transaction. Returns the DelegatedAccount.
    """
    from integrations.microsoft.crypto import encrypt
    from integrations.microsoft.models import DelegatedAccount
    from portal.access.authz import require
    from portal.audit.services import record

    require(actor, "rotate_credentials", action="teams_sender.connect", target_type="teams_sender")
    active = _resolve_active()
    active.refuse_if_foreign()
    cache = msal.SerializableTokenCache()
    app = build_app(active.secret, token_cache=cache)
    params = {
        k: (v[0] if isinstance(v, list) and len(v) == 1 else v)
        for k, v in dict(query_params).items()
    }
    try:
        result = app.acquire_token_by_auth_code_flow(flow, params, scopes=delegated_scopes())
    except ValueError as exc:
        # MSAL raises ValueError for a state mismatch (a replayed or forged redirect).
        result = {"error": "state_mismatch", "error_description": str(exc)}
    except requests.RequestException as exc:
        result = {"error": "unreachable", "error_description": type(exc).__name__}
    if "access_token" not in result:
        error = token_error(result, secret=active.secret)
        record(
            "teams_sender.connect",
            actor=actor,
            target_type="teams_sender",
            outcome="failure",
            reason=str(error.message)[:500],
        )
        raise error
    claims = result.get("id_token_claims") or {}
    upn = str(claims.get("preferred_username") or claims.get("upn") or "")
    accounts = app.get_accounts(username=upn) if upn else app.get_accounts()
    home_account_id = accounts[0].get("home_account_id", "") if accounts else ""
    now = timezone.now()
    with transaction.atomic():
        DelegatedAccount.objects.filter(disconnected_at__isnull=True).update(disconnected_at=now)
        account = DelegatedAccount.objects.create(
            upn=upn,
            display_name=str(claims.get("name") or ""),
            home_account_id=home_account_id,
            scopes=str(result.get("scope") or "")[:500],
            token_cache_encrypted=encrypt(cache.serialize()),
            cache_version=1,
            connected_at=now,
            connected_by=getattr(actor, "name", "")[:150],
            last_refresh_at=now,
        )
        record(
            "teams_sender.connect",
            actor=actor,
            target_type="teams_sender",
            target_id=account.pk,
            params={"upn": upn, "granted_scopes": str(result.get("scope") or "")},
        )
    with _lock:
        _delegated.clear()
    return account


def disconnect_delegated(actor: Any) -> int:
    """Disconnect the Teams sender (its cache is erased). Requires `rotate_credentials`."""
    from integrations.microsoft.models import DelegatedAccount
    from portal.access.authz import require
    from portal.audit.services import record

    require(
        actor, "rotate_credentials", action="teams_sender.disconnect", target_type="teams_sender"
    )
    with transaction.atomic():
        accounts = list(
            DelegatedAccount.objects.select_for_update().filter(disconnected_at__isnull=True)
        )
        DelegatedAccount.objects.filter(pk__in=[a.pk for a in accounts]).update(
            disconnected_at=timezone.now(), token_cache_encrypted=""
        )
        for account in accounts:
            record(
                "teams_sender.disconnect",
                actor=actor,
                target_type="teams_sender",
                target_id=account.pk,
                params={"upn": account.upn},
            )
    with _lock:
        _delegated.clear()
    return len(accounts)


def current_delegated_account() -> Any:
    from integrations.microsoft.models import DelegatedAccount

    return DelegatedAccount.objects.filter(disconnected_at__isnull=True).first()


def delegated_token(*, force_refresh: bool = False) -> str:
    """An access token of the Teams sender, refreshed by MSAL with the stored refresh token.

    The cache is written back (encrypted) whenever MSAL changed it. Raises TokenError when no
    sender is connected or the refresh token no longer works (reconnect needed).
    """
    from integrations.microsoft.crypto import decrypt, encrypt
    from integrations.microsoft.models import DelegatedAccount

    account = current_delegated_account()
    if account is None or not account.token_cache_encrypted:
        raise TokenError(
            "No Teams sender account is connected: an admin must use "
            "“Connect Teams sender account” in the console.",
            error="no_delegated_account",
        )
    active = _resolve_active()
    active.refuse_if_foreign()
    key = (authority(), settings.MICROSOFT_CLIENT_ID, active.fingerprint)
    with _lock:
        entry = _delegated.get(key)
        if entry is None or entry[2] != account.pk or entry[3] != account.cache_version:
            # First use, or another process refreshed and stored a newer cache: reload.
            # MSAL binds the cache at construction, so a new cache means a new app.
            cache = msal.SerializableTokenCache()
            cache.deserialize(decrypt(account.token_cache_encrypted))
            app = build_app(active.secret, token_cache=cache)
            entry = (app, cache, account.pk, account.cache_version)
            _delegated.clear()
            _delegated[key] = entry
        app, cache, _, version = entry
        accounts = app.get_accounts(username=account.upn) or app.get_accounts()
        result = None
        if accounts:
            try:
                result = app.acquire_token_silent_with_error(
                    delegated_scopes(), account=accounts[0], force_refresh=force_refresh
                )
            except requests.RequestException as exc:
                raise TokenError(
                    f"Could not reach the identity platform ({type(exc).__name__}).",
                    transient=True,
                    error="unreachable",
                ) from None
        if not result or "access_token" not in result:
            error = (
                token_error(result, secret=active.secret)
                if result
                else TokenError(
                    f"The Teams sender {account.upn} must be reconnected: no usable token in its "
                    "cache.",
                    error="reconnect_required",
                )
            )
            if not error.transient:
                error = TokenError(
                    f"The Teams sender {account.upn} must be reconnected: {error.message}",
                    aadsts=error.aadsts,
                    error=error.error,
                )
            DelegatedAccount.objects.filter(pk=account.pk).update(
                last_error=error.message[:2000], last_error_at=timezone.now()
            )
            raise error
        if cache.has_state_changed:
            # Conditional on the version we loaded: if another process wrote first, its
            # cache (with its own fresh refresh token) wins and we reload next time.
            updated = DelegatedAccount.objects.filter(pk=account.pk, cache_version=version).update(
                token_cache_encrypted=encrypt(cache.serialize()),
                cache_version=version + 1,
                last_refresh_at=timezone.now(),
                last_error="",
            )
            cache.has_state_changed = False
            if updated:
                _delegated[key] = (app, cache, account.pk, version + 1)
        return result["access_token"]
