"""Staff sign-in with Microsoft Entra ID: OpenID Connect authorization code + PKCE.

Who checks what:
- MSAL (`initiate_auth_code_flow` / `acquire_token_by_auth_code_flow`) makes the PKCE pair,
  the state and the nonce, and on the way back refuses a state that does not match
  (ValueError) and an id token whose nonce is not the hash of ours (RuntimeError).
- MSAL 1.38+ does NOT validate the id token otherwise (its issue #911: it only decodes the
  claims; even the old helper never checked the signature, relying on TLS to the token
  endpoint). So PyJWT checks the RS256 signature against the tenant's published keys
  (PyJWKClient, keys cached, refetched for an unknown key id), the issuer, the audience
  (our client id), expiry/not-before and the required claims; we then check the tenant id.
  Signature checks matter here because the token decides who someone is and which role they
  get: a TLS-only argument breaks as soon as a proxy, a misconfigured CA bundle or a bug
  feeds us a token from elsewhere.
- Roles come from the token's `roles` claim (app roles on the registration) and optionally
  `groups`; evaluated at every sign-in and re-checked via a silent refresh every
  SSO_ROLE_RECHECK_MINUTES (EntraRoleRecheckMiddleware).

The callback is a GET (response_mode=query): form_post would be a cross-site POST that
carries no SameSite=Lax session cookie, and the flow lives in the session.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import jwt
import msal
import requests
from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from integrations.graph.errors import TokenError
from integrations.graph.http import build_session
from integrations.microsoft.active_credential import active_credential
from portal.access.actors import Actor, forget_permissions, role_of
from portal.access.models import EntraAccount, LastSignIn
from portal.access.request_types import SignInHttpRequest
from portal.access.roles import ROLES
from portal.access.users import apply_role
from portal.audit.services import record
from portal.lib.crypto import DecryptionError, decrypt, encrypt

logger = logging.getLogger(__name__)

FLOW_KEY = "sso_flow"
SESSION_KEY = "sso"
SIGN_IN_ACTOR = "entra-sso"
CLOCK_SKEW_SECONDS = 120
# Entra could not answer (MSAL raises MsalServiceError for a 5xx from the token endpoint).
UNREACHABLE = (requests.RequestException, msal.exceptions.MsalServiceError)


class SignInRefused(Exception):
    """Sign-in did not happen. `message` is for the person, `reason` for the audit log."""

    def __init__(self, message: str, *, reason: str, status: int = 403, user: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason
        self.status = status
        self.user = user


@dataclass(frozen=True)
class SignedIn:
    user: Any
    role: str
    mfa: bool
    next_url: str
    session_data: dict[str, Any]


def enabled() -> bool:
    return bool(settings.SSO_ENABLED)


def authority() -> str:
    return f"{settings.SSO_AUTHORITY_HOST}/{settings.SSO_TENANT_ID}"


def expected_issuer() -> str:
    """The v2.0 issuer of the configured tenant (what Entra's discovery document says)."""
    return f"{authority()}/v2.0"


def _client_secret() -> str:
    if settings.SSO_CLIENT_SECRET:
        return settings.SSO_CLIENT_SECRET
    if settings.SSO_CLIENT_ID != settings.MICROSOFT_CLIENT_ID:
        raise SignInRefused(
            "Sign-in with Microsoft is not set up: SSO_CLIENT_SECRET is missing.",
            reason="SSO_CLIENT_SECRET not set",
            status=503,
        )
    # The integration's own registration: use its active secret, so a rotation covers both.
    try:
        return active_credential().secret_value()
    except TokenError:
        raise SignInRefused(
            "Sign-in with Microsoft is not set up: the integration has no active client secret.",
            reason="no active client secret",
            status=503,
        ) from None


_lock = threading.Lock()
_apps: dict[tuple[str, str, str], msal.ConfidentialClientApplication] = {}
_jwks: dict[str, jwt.PyJWKClient] = {}


def _app() -> msal.ConfidentialClientApplication:
    secret = _client_secret()
    key = (authority(), settings.SSO_CLIENT_ID, hashlib.sha256(secret.encode()).hexdigest())
    with _lock:
        app = _apps.get(key)
    if app is not None:
        return app
    try:
        app = msal.ConfidentialClientApplication(
            settings.SSO_CLIENT_ID,
            client_credential=secret,
            authority=authority(),
            http_client=build_session(),
            # One known tenant: its own discovery document is all MSAL needs.
            instance_discovery=False,
        )
    except (ValueError, requests.RequestException) as exc:
        raise SignInRefused(
            "Microsoft sign-in is unavailable right now; try again in a minute.",
            reason=f"discovery failed: {type(exc).__name__}",
            status=503,
        ) from None
    with _lock:
        _apps.clear()
        _apps[key] = app
    return app


def _jwks_client() -> jwt.PyJWKClient:
    uri = f"{authority()}/discovery/v2.0/keys"
    with _lock:
        client = _jwks.get(uri)
        if client is None:
            context = ssl.create_default_context(cafile=settings.MICROSOFT_CA_BUNDLE or None)
            client = jwt.PyJWKClient(
                uri, cache_keys=True, lifespan=3600, timeout=10, ssl_context=context
            )
            _jwks.clear()
            _jwks[uri] = client
        return client


def forget_clients() -> None:
    """Drop the cached MSAL app and key set (tests; settings changes)."""
    with _lock:
        _apps.clear()
        _jwks.clear()


def validate_id_token(token: str) -> dict[str, Any]:
    """The claims of a valid id token from the configured tenant for this app; else
    SignInRefused. (The nonce is MSAL's check, done before this.)"""
    try:
        key = _jwks_client().get_signing_key_from_jwt(token).key
        claims = jwt.decode(
            token,
            key,
            algorithms=["RS256"],
            audience=settings.SSO_CLIENT_ID,
            issuer=expected_issuer(),
            leeway=CLOCK_SKEW_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "oid", "tid"]},
        )
    except jwt.PyJWTError as exc:
        raise SignInRefused(
            "Microsoft's answer could not be verified, so you were not signed "
            "in. Try again; if it keeps happening, tell an administrator.",
            reason=f"id token refused: {type(exc).__name__}: {exc}",
        ) from None
    if str(claims["tid"]).lower() != settings.SSO_TENANT_ID.lower():
        raise SignInRefused(
            "That account belongs to another organisation.",
            reason=f"id token from tenant {claims['tid']}",
        )
    return claims


def grants_of(claims: dict[str, Any]) -> tuple[str, list[str]]:
    """(the highest portal role the claims grant or '', the grants that matched)."""
    app_roles = set(claims.get("roles") or [])
    groups = set(claims.get("groups") or [])
    granted: set[str] = set()
    matched: list[str] = []
    for role, app_role in settings.SSO_APP_ROLES.items():
        if app_role in app_roles:
            granted.add(role)
            matched.append(app_role)
    for group_id, role in settings.SSO_GROUP_ROLE_MAP.items():
        if group_id in groups:
            granted.add(role)
            matched.append(f"group:{group_id}")
    role = next((r for r in reversed(ROLES) if r in granted), "")
    return role, sorted(matched)


def has_mfa(claims: dict[str, Any]) -> bool:
    return "mfa" in (claims.get("amr") or [])


def redirect_uri(request: HttpRequest) -> str:
    return settings.SSO_REDIRECT_URI or request.build_absolute_uri(reverse("sso_callback"))


def begin(request: HttpRequest, next_url: str) -> str:
    """Start a sign-in: keep the flow (PKCE verifier, state, nonce) in the session and return
    the URL of Microsoft's sign-in page."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="response_mode='form_post'")
        flow = _app().initiate_auth_code_flow(
            scopes=[],
            redirect_uri=redirect_uri(request),
            prompt=settings.SSO_PROMPT or None,
            response_mode="query",
        )
    if "auth_uri" not in flow:
        raise SignInRefused(
            "Microsoft sign-in is unavailable right now.",
            reason=f"flow not started: {flow.get('error')}",
            status=503,
        )
    request.session[FLOW_KEY] = {"flow": flow, "next": next_url}
    return flow["auth_uri"]


def _first_line(text: Any) -> str:
    return (str(text or "").splitlines() or [""])[0][:300]


def complete(request: HttpRequest) -> SignedIn:
    """Finish a sign-in from the redirect's query. Returns who signed in (not yet logged in:
    the view does that). Raises SignInRefused, audited when this session had started a
    sign-in: an answer nobody waits for is anyone's request, and the view counts it instead
    (an unauthenticated caller must not grow the audit log)."""
    pending = request.session.pop(FLOW_KEY, None)
    if not pending:
        raise SignInRefused(
            "This sign-in link was already used or has expired. Start again from the sign-in page.",
            reason="no sign-in pending in this session (state replay, or the session expired)",
            status=400,
        )
    actor = Actor.from_request(request)
    try:
        return _complete(request, pending)
    except SignInRefused as refused:
        who = refused.user
        if who is not None:
            actor = Actor(
                kind="user",
                name=who.get_username(),
                role=role_of(who),
                user=who,
                ip=actor.ip,
                user_agent=actor.user_agent,
                request_id=actor.request_id,
            )
        record(
            "auth.sso",
            actor=actor,
            target_type="user",
            target_id=who.pk if who is not None else "",
            outcome="denied",
            reason=refused.reason,
        )
        raise


def _complete(request: HttpRequest, pending: dict[str, Any]) -> SignedIn:
    query = request.GET.dict()
    if query.get("error"):
        raise SignInRefused(
            f"Microsoft did not sign you in: "
            f"{_first_line(query.get('error_description')) or query['error']}",
            reason=f"authorize error {query['error']}: "
            f"{_first_line(query.get('error_description'))}",
        )
    try:
        result = _app().acquire_token_by_auth_code_flow(pending["flow"], query, scopes=[])
    except ValueError as exc:  # state mismatch or missing
        raise SignInRefused(
            "This sign-in answer does not belong to your sign-in. Start again.",
            reason=f"state check failed: {exc}",
            status=400,
        ) from None
    except RuntimeError as exc:  # nonce mismatch
        raise SignInRefused(
            "Microsoft's answer could not be verified, so you were not signed in.",
            reason=f"nonce check failed: {_first_line(exc)}",
        ) from None
    except UNREACHABLE as exc:
        raise SignInRefused(
            "Microsoft sign-in is unavailable right now; try again.",
            reason=f"token endpoint unreachable: {type(exc).__name__}",
            status=503,
        ) from None
    if "id_token" not in result:
        raise SignInRefused(
            "Microsoft did not sign you in; start again.",
            reason=f"token error {result.get('error')}: "
            f"{_first_line(result.get('error_description'))}",
        )
    claims = validate_id_token(result["id_token"])
    role, grants = grants_of(claims)
    user = provision(claims, role, grants, result.get("refresh_token") or "")
    if not user.is_active:
        raise SignInRefused(
            "Your portal account is deactivated. Ask an administrator.",
            reason="account deactivated in the portal",
            user=user,
        )
    if not role:
        raise SignInRefused(
            "You signed in with Microsoft, but no portal role is assigned to you. Ask an "
            "administrator to assign you one of the portal's app roles in Entra ID.",
            reason="no portal app role in the id token",
            user=user,
        )
    mfa = has_mfa(claims)
    session_data = {
        "oid": claims["oid"],
        "checked_at": time.time(),
        "mfa": bool(settings.SSO_TRUST_ENTRA_MFA and mfa),
        "rt": encrypt(result["refresh_token"]) if result.get("refresh_token") else "",
    }
    return SignedIn(
        user=user, role=role, mfa=mfa, next_url=pending.get("next") or "", session_data=session_data
    )


def log_in(request: SignInHttpRequest, signed: SignedIn) -> None:
    """Start the portal session for a completed sign-in (audited as auth.login)."""
    request.sign_in_method = LastSignIn.Method.ENTRA_MFA if signed.mfa else LastSignIn.Method.ENTRA
    login(request, signed.user, backend="portal.access.backends.EntraBackend")
    request.session[SESSION_KEY] = signed.session_data


def _username_for(claims: dict[str, Any]) -> str:
    User = get_user_model()
    base = str(claims.get("preferred_username") or claims["oid"])[:140]
    if not User.objects.filter(username__iexact=base).exists():
        return base
    return f"{base[:130]}~{claims['oid'][:8]}"  # a local account already has that name


def provision(claims: dict[str, Any], role: str, grants: list[str], refresh_token: str = "") -> Any:
    """The portal account linked to this Entra object id (created just in time), with the
    role Entra grants now. Audited: creation and every role change."""
    entra = Actor.system(SIGN_IN_ACTOR)
    tenant, oid = str(claims["tid"]).lower(), str(claims["oid"]).lower()
    upn = str(claims.get("preferred_username") or "")[:255]
    with transaction.atomic():
        account = (
            EntraAccount.objects.select_for_update()
            .select_related("user")
            .filter(tenant_id=tenant, object_id=oid)
            .first()
        )
        if account is None:
            user = get_user_model().objects.create_user(
                username=_username_for(claims), email=str(claims.get("email") or "")
            )
            user.set_unusable_password()
            user.first_name = str(claims.get("name") or "")[:150]
            user.save()
            account = EntraAccount.objects.create(
                user=user, tenant_id=tenant, object_id=oid, upn=upn
            )
            record(
                "user.create",
                actor=entra,
                target_type="user",
                target_id=user.pk,
                params={"username": user.get_username(), "source": "entra", "oid": oid},
            )
        user = account.user
        before = role_of(user)
        if before != role:
            apply_role(user, role)
            record(
                "user.set_role",
                actor=entra,
                target_type="user",
                target_id=user.pk,
                params={
                    "username": user.get_username(),
                    "before": before,
                    "after": role,
                    "source": "entra",
                    "grants": grants,
                },
            )
        account.upn, account.grants, account.last_checked_at = upn, grants, timezone.now()
        if refresh_token:
            account.refresh_token = encrypt(refresh_token)
        account.save(update_fields=["upn", "grants", "last_checked_at", "refresh_token"])
    return user


# ------------------------------------------------------------------------ live sessions


def recheck_due(request: HttpRequest) -> bool:
    data = request.session.get(SESSION_KEY)
    if not data:
        return False
    return time.time() - float(data.get("checked_at", 0)) >= (
        settings.SSO_ROLE_RECHECK_MINUTES * 60
    )


def _refresh(refresh_token: str, oid: str) -> tuple[dict[str, Any], str]:
    """Ask Entra again with a refresh token: (validated claims, the newest refresh token).
    Raises SignInRefused when Entra says no or its answer is not trustworthy, and one of
    UNREACHABLE when it cannot answer."""
    result = _app().acquire_token_by_refresh_token(refresh_token, scopes=[])
    if "id_token" not in result:
        raise SignInRefused(
            "",
            reason=f"refresh refused: {result.get('error')}: "
            f"{_first_line(result.get('error_description'))}",
        )
    claims = validate_id_token(result["id_token"])
    if str(claims["oid"]).lower() != str(oid).lower():
        raise SignInRefused("", reason="refreshed token names another person")
    return claims, result.get("refresh_token") or refresh_token


def withdraw(account: EntraAccount, reason: str) -> None:
    """Entra no longer vouches for this person: no role (so no API token works either)."""
    user = account.user
    with transaction.atomic():
        before = role_of(user)
        apply_role(user, "")
        account.grants, account.refresh_token = [], ""
        account.last_checked_at = timezone.now()
        account.save(update_fields=["grants", "refresh_token", "last_checked_at"])
        if before:
            record(
                "user.set_role",
                actor=Actor.system(SIGN_IN_ACTOR),
                target_type="user",
                target_id=user.pk,
                reason=reason,
                params={
                    "username": user.get_username(),
                    "before": before,
                    "after": "",
                    "source": "entra",
                },
            )


def recheck(request: HttpRequest) -> str:
    """Ask Entra again (a silent refresh) what this session's person may do; apply it.

    Returns '' when the session may go on, else why it must end (the caller signs out).
    """
    data = request.session[SESSION_KEY]
    user = request.user
    # EntraRoleRecheckMiddleware re-checks signed-in sessions only.
    assert user.is_authenticated
    account = EntraAccount.objects.filter(user=user).first()
    try:
        if not enabled() or account is None:
            raise SignInRefused("", reason="SSO is switched off")
        try:
            refresh_token = decrypt(data.get("rt") or "")
        except DecryptionError:
            raise SignInRefused("", reason="no usable refresh token for the re-check") from None
        try:
            claims, refresh_token = _refresh(refresh_token, data["oid"])
        except UNREACHABLE as exc:
            # Entra unreachable: keep the session, try again on the next request.
            logger.warning("SSO role re-check failed (%s); will retry", type(exc).__name__)
            return ""
        except SignInRefused as refused:
            withdraw(account, refused.reason)
            raise
        role, grants = grants_of(claims)
        provision(claims, role, grants, refresh_token)
        if not role:
            raise SignInRefused("", reason="portal app role removed in Entra")
    except SignInRefused as refused:
        record(
            "auth.sso_recheck",
            actor=Actor.from_request(request),
            target_type="user",
            target_id=user.pk,
            outcome="denied",
            reason=refused.reason,
        )
        return refused.reason
    data.update(checked_at=time.time(), rt=encrypt(refresh_token))
    request.session[SESSION_KEY] = data
    forget_permissions(user)
    return ""


def accounts_to_recheck() -> list[int]:
    """SSO people who hold a usable API token (sessions re-check themselves)."""
    usable = Q(user__api_tokens__revoked_at__isnull=True) & (
        Q(user__api_tokens__expires_at__isnull=True)
        | Q(user__api_tokens__expires_at__gt=timezone.now())
    )
    return list(
        EntraAccount.objects.filter(usable, user__is_active=True)
        .exclude(refresh_token="")
        .values_list("pk", flat=True)
        .distinct()
    )


def recheck_account(account_id: int) -> bool:
    """Re-ask Entra about one person without a session; True when Entra answered."""
    account = EntraAccount.objects.select_related("user").filter(pk=account_id).first()
    if account is None or not account.refresh_token:
        return False
    try:
        claims, refresh_token = _refresh(decrypt(account.refresh_token), account.object_id)
    except DecryptionError:
        withdraw(account, "refresh token undecryptable")
        return True
    except UNREACHABLE as exc:
        logger.warning(
            "Entra re-check of account %s failed (%s); next run retries",
            account_id,
            type(exc).__name__,
        )
        return False
    except SignInRefused as refused:
        withdraw(account, refused.reason)
        return True
    role, grants = grants_of(claims)
    provision(claims, role, grants, refresh_token)
    return True


def entra_mfa_trusted(request: HttpRequest) -> bool:
    """This session's sign-in used MFA at Entra and SSO_TRUST_ENTRA_MFA says that counts."""
    data = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    return bool(settings.SSO_TRUST_ENTRA_MFA and data and data.get("mfa"))
