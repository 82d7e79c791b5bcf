"""The delegated Teams sender: the service account whose token posts Teams messages.

App-only Graph cannot post normal Teams messages ("Send chatMessage in a channel or a chat"), so an
admin
connects one account through MSAL's authorization-code flow (PKCE); its token cache is stored
encrypted (DelegatedAccount) and refreshed here. The MSAL apps come from auth.py and are built
with the active credential.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import msal
import requests
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from integrations.graph import auth, ports
from integrations.graph.errors import TokenError
from integrations.microsoft.models import DelegatedAccount
from portal.access.authz import require
from portal.audit.services import record
from portal.lib.crypto import decrypt, encrypt

# Delegated scopes for the Teams sender; MSAL adds openid/profile/offline_access itself and
# refuses them if passed (that is how we get a refresh token). Chat.Create: a message "toUser"
# finds or creates the 1:1 chat with that user.
DELEGATED_SCOPES = ("ChatMessage.Send", "ChannelMessage.Send", "Chat.Create", "User.Read")


def delegated_scopes() -> list[str]:
    return [f"{auth.graph_resource()}/{scope}" for scope in DELEGATED_SCOPES]


_lock = threading.RLock()


_delegated: dict[
    tuple[str, str, str],
    tuple[msal.ConfidentialClientApplication, msal.SerializableTokenCache, int, int],
] = {}


def delegated_redirect_uri(request: HttpRequest) -> str:
    """The Teams sender sign-in's redirect URI: MICROSOFT_DELEGATED_REDIRECT_PATH on the host
    the admin uses. Entra matches it exactly against the app registration's list, so the
    console shows this same value as the one to register."""
    return request.build_absolute_uri(settings.MICROSOFT_DELEGATED_REDIRECT_PATH)


def _redirect_uri(request_or_redirect_uri: HttpRequest | str) -> str:
    if isinstance(request_or_redirect_uri, str):
        return request_or_redirect_uri
    return delegated_redirect_uri(request_or_redirect_uri)


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
    active = auth.resolve_active()
    active.refuse_if_foreign()
    app = auth.build_app(active.client_credential)
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
        raise auth.token_error(flow, credential=active.client_credential)
    return flow["auth_uri"], flow


def complete_delegated_connect(
    actor: Any, flow: dict[str, Any], query_params: dict[str, Any]
) -> Any:
    """Redeem the authorization code and store the sender's token cache, encrypted.

    Requires `rotate_credentials`; audited as `teams_sender.connect`. Any previously connected
    sender is marked disconnected in the same transaction. Returns the DelegatedAccount.
    """

    require(actor, "rotate_credentials", action="teams_sender.connect", target_type="teams_sender")
    active = auth.resolve_active()
    active.refuse_if_foreign()
    cache = msal.SerializableTokenCache()
    app = auth.build_app(active.client_credential, token_cache=cache)
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
        error = auth.token_error(result, credential=active.client_credential)
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
    return DelegatedAccount.objects.filter(disconnected_at__isnull=True).first()


def delegated_token(*, force_refresh: bool = False) -> str:
    """An access token of the Teams sender, refreshed by MSAL with the stored refresh token.

    The cache is written back (encrypted) whenever MSAL changed it. Raises TokenError when no
    sender is connected or the refresh token no longer works (reconnect needed).
    """

    account = current_delegated_account()
    if account is None or not account.token_cache_encrypted:
        raise TokenError(
            "No Teams sender account is connected: an admin must use "
            "“Connect Teams sender account” in the console.",
            error="no_delegated_account",
        )
    active = auth.resolve_active()
    active.refuse_if_foreign()
    key = (auth.authority(), settings.MICROSOFT_CLIENT_ID, active.fingerprint)
    with _lock:
        entry = _delegated.get(key)
        if entry is None or entry[2] != account.pk or entry[3] != account.cache_version:
            # First use, or another process refreshed and stored a newer cache: reload.
            # MSAL binds the cache at construction, so a new cache means a new app.
            cache = msal.SerializableTokenCache()
            cache.deserialize(decrypt(account.token_cache_encrypted))
            app = auth.build_app(active.client_credential, token_cache=cache)
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
                auth.token_error(result, credential=active.client_credential)
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


def _forget_apps() -> None:
    with _lock:
        _delegated.clear()


ports.on_invalidate(_forget_apps)
