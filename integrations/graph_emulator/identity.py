"""Microsoft identity platform (v2 endpoint) emulation.

Routes (``/{tenant}/...``): OIDC discovery, ``oauth2/v2.0/token`` (client
credentials, authorization code with PKCE, refresh token) and
``oauth2/v2.0/authorize`` (auto sign-in as the configured service account, or a
user picker with ``prompt=select_account``).  Also validates bearer tokens for
the Graph side (:meth:`IdentityService.authenticate`).
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from . import assertions, sign_in
from .httptypes import (
    GraphError,
    Request,
    Response,
    b64url,
    empty_response,
    iso,
    json_response,
    jwt_decode,
    jwt_encode,
    opaque_token,
    text_response,
)
from .state import App, EmulatorState, FederatedCredential

GRAPH_RESOURCES = {
    "https://graph.microsoft.com",
    "https://graph.microsoft.com/",
    "00000003-0000-0000-c000-000000000000",
    "https://canary.graph.microsoft.com",
}
GRAPH_AUDIENCE = "https://graph.microsoft.com"
RESERVED_SCOPES = {"openid", "profile", "offline_access", "email"}
TOKEN_LIFETIME = 3599
CODE_LIFETIME = timedelta(minutes=10)
REFRESH_LIFETIME = timedelta(days=90)


# Signature-checked tokens remembered (IdentityService._verified), then forgotten at once.
VERIFIED_TOKENS_MAX = 4096


@dataclass
class Principal:
    app_id: str
    delegated: bool
    roles: set[str] = field(default_factory=set)
    scopes: set[str] = field(default_factory=set)
    user_id: str | None = None
    upn: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    def has_any(self, *perms: str) -> bool:
        granted = self.scopes if self.delegated else self.roles
        low = {g.lower() for g in granted}
        return any(p.lower() in low for p in perms)

    @property
    def granted_text(self) -> str:
        return ",".join(sorted(self.scopes if self.delegated else self.roles))


class AadError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        code: int,
        description: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"AADSTS{code}: {description}")
        self.status = status
        self.error = error
        self.code = code
        self.description = description
        self.headers = headers or {}


def aad_error_response(err: AadError, now: datetime) -> Response:
    trace_id = str(uuid.uuid4())
    corr = str(uuid.uuid4())
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    body = {
        "error": err.error,
        "error_description": f"AADSTS{err.code}: {err.description}\r\nTrace ID: {trace_id}"
        f"\r\nCorrelation ID: {corr}\r\nTimestamp: {stamp}",
        "error_codes": [err.code],
        "timestamp": stamp,
        "trace_id": trace_id,
        "correlation_id": corr,
        "error_uri": f"https://login.microsoftonline.com/error?code={err.code}",
    }
    headers = {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache", **err.headers}
    return json_response(err.status, body, headers, content_type="application/json; charset=utf-8")


def _pkce_s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _norm_scope(s: str) -> str:
    for prefix in ("https://graph.microsoft.com/", "00000003-0000-0000-c000-000000000000/"):
        if s.lower().startswith(prefix):
            return s[len(prefix) :]
    return s


class IdentityService:
    def __init__(self, state: EmulatorState, signing_key: bytes) -> None:
        self.state = state
        self.key = signing_key
        self.oidc_key: sign_in.SigningKey | None = None  # set by the server (RS256 id tokens)
        # Claims of tokens whose signature was checked: a client sends the same token for an
        # hour, and the check (HMAC, two base64 and a JSON decode) was a fifth of a delta
        # GET's interpreter time. Only the signature is remembered; every other check runs
        # on each request.
        self._verified: dict[str, dict[str, Any]] = {}
        self.base_url = "https://127.0.0.1"

    # ------------------------------------------------------------------ helpers

    def tenant_matches(self, tenant: str) -> bool:
        t = tenant.lower()
        return t in (
            self.state.tenant_id.lower(),
            self.state.domain.lower(),
            "organizations",
            "common",
        )

    def issuer(self) -> str:
        return f"{self.base_url}/{self.state.tenant_id}/v2.0"

    def workload_issuer(self) -> str:
        """The emulator as an external OIDC issuer (a Kubernetes cluster, say) for workload
        identity tests: its tokens are signed with the tenant's OIDC key."""
        return f"{self.base_url}/workload-identity-issuer"

    def jwks_uri(self) -> str:
        return f"{self.base_url}/{self.state.tenant_id}/discovery/v2.0/keys"

    def workload_token(self, subject: str, audience: str, lifetime: int) -> str:
        if self.oidc_key is None:
            raise ValueError("the emulator has no signing key")
        iat = int(self.state.clock.timestamp())
        return self.oidc_key.sign(
            {
                "iss": self.workload_issuer(),
                "sub": subject,
                "aud": [audience],
                "iat": iat,
                "nbf": iat,
                "exp": iat + lifetime,
            }
        )

    def _issuer_keys(self, record: FederatedCredential) -> dict[str, Any]:
        if record.jwks is not None:
            return record.jwks
        if record.jwks_uri == self.jwks_uri() and self.oidc_key is not None:
            return self.oidc_key.jwks()
        return assertions.fetch_jwks(record.jwks_uri)

    def _assertion_auth(self, app: App, form: dict[str, str], tenant: str, now: datetime) -> App:
        if form.get("client_assertion_type") != assertions.ASSERTION_TYPE:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_assertion_type' "
                f"('{assertions.ASSERTION_TYPE}').",
            )
        try:
            assertions.verify(
                app,
                form["client_assertion"],
                tenant_names={
                    tenant.lower(),
                    self.state.tenant_id.lower(),
                    self.state.domain.lower(),
                },
                now=now.timestamp(),
                issuer_keys=self._issuer_keys,
            )
        except assertions.AssertionRejected as exc:
            status = 400 if exc.code in (50027, 70021) else 401
            error = "invalid_request" if exc.code == 50027 else "invalid_client"
            raise AadError(status, error, exc.code, exc.description) from None
        return app

    def discovery(self, tenant: str) -> Response:
        if not self.tenant_matches(tenant):
            raise AadError(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the "
                "correct tenant ID and are signing into the correct cloud.",
            )
        base = f"{self.base_url}/{self.state.tenant_id}"
        doc = {
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "token_endpoint_auth_methods_supported": [
                "client_secret_post",
                "private_key_jwt",
                "client_secret_basic",
            ],
            "jwks_uri": f"{self.base_url}/{self.state.tenant_id}/discovery/v2.0/keys",
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": self.issuer(),
            "request_uri_parameter_supported": False,
            "userinfo_endpoint": f"{self.base_url}/oidc/userinfo",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
            "http_logout_supported": True,
            "frontchannel_logout_supported": True,
            "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
            "claims_supported": [
                "sub",
                "iss",
                "aud",
                "exp",
                "iat",
                "auth_time",
                "acr",
                "nonce",
                "preferred_username",
                "name",
                "tid",
                "ver",
                "at_hash",
                "c_hash",
                "email",
            ],
            "kerberos_endpoint": f"{base}/kerberos",
            "tenant_region_scope": "EU",
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
            "rbac_url": "https://pas.windows.net",
        }
        return json_response(200, doc, content_type="application/json; charset=utf-8")

    def _client_auth(
        self, req: Request, form: dict[str, str], now: datetime, tenant: str = ""
    ) -> App:
        client_id = form.get("client_id")
        secret = form.get("client_secret")
        auth = req.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                raw = base64.b64decode(auth[6:].strip()).decode()
                cid, _, sec = raw.partition(":")
                client_id = client_id or cid
                secret = secret or sec
            except (ValueError, UnicodeError):
                pass
        if not client_id:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'client_id'.",
            )
        app = self.state.apps.get(client_id)
        if app is None:
            raise AadError(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{client_id}' was not found in the "
                f"directory '{self.state.tenant_name}'. This can happen if the "
                "application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant. You may have "
                "sent your authentication request to the wrong tenant.",
            )
        if not secret:
            if form.get("client_assertion"):
                return self._assertion_auth(app, form, tenant or self.state.tenant_id, now)
            raise AadError(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: "
                "'client_assertion' or 'client_secret'.",
            )
        match = next((s for s in app.secrets if secrets.compare_digest(s.value, secret)), None)
        if match is None:
            raise AadError(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the "
                "request is the client secret value, not the client secret ID, for "
                f"a secret added to app '{client_id}'.",
            )
        if match.expired or (match.end is not None and match.end <= now):
            raise AadError(
                401,
                "invalid_client",
                7000222,
                f"The provided client secret keys for app '{client_id}' are "
                "expired. Visit the Azure portal to create new keys for your app: "
                "https://aka.ms/NewClientSecret, or consider using certificate "
                "credentials for added security: https://aka.ms/certCreds.",
            )
        return app

    # ------------------------------------------------------------------ token endpoint

    def token(self, tenant: str, req: Request) -> Response:
        now = self.state.clock.now()
        if not self.tenant_matches(tenant):
            raise AadError(
                400,
                "invalid_request",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the "
                "correct tenant ID and are signing into the correct cloud.",
            )
        ctype = (req.headers.get("Content-Type") or "").lower()
        if "application/x-www-form-urlencoded" not in ctype:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        form = req.form()
        grant = form.get("grant_type")
        if not grant:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            )
        with self.state.lock:
            app = self._client_auth(req, form, now, tenant)
            if grant == "client_credentials":
                return self._client_credentials(app, form, now)
            if grant == "authorization_code":
                return self._auth_code(app, form, now)
            if grant == "refresh_token":
                return self._refresh(app, form, now)
        raise AadError(
            400,
            "unsupported_grant_type",
            70003,
            f"The app requested an unsupported grant type '{grant}'.",
        )

    def _client_credentials(self, app: App, form: dict[str, str], now: datetime) -> Response:
        scope = (form.get("scope") or "").strip()
        if not scope:
            raise AadError(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'scope'.",
            )
        scopes = scope.split()
        for s in scopes:
            if not s.endswith("/.default"):
                raise AadError(
                    400,
                    "invalid_scope",
                    1002012,
                    f"The provided value for scope {s} is not valid. Client "
                    "credential flows must have a scope value with /.default "
                    "suffixed to the resource identifier (application ID URI).",
                )
        if len(scopes) > 1:
            raise AadError(
                400,
                "invalid_scope",
                70011,
                f"The provided request must include a 'scope' input parameter. The "
                f"provided value for the input parameter 'scope' is not valid. "
                f"The scope {scope} is not valid.",
            )
        resource = scopes[0][: -len("/.default")]
        if resource not in GRAPH_RESOURCES:
            raise AadError(
                400,
                "invalid_resource",
                500011,
                f"The resource principal named {resource} was not found in the "
                f"tenant named {self.state.tenant_name}. This can happen if the "
                "application has not been installed by the administrator of the "
                "tenant or consented to by any user in the tenant.",
            )
        iat = int(now.timestamp())
        claims: dict[str, Any] = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{self.state.tenant_id}/",
            "iat": iat,
            "nbf": iat,
            "exp": iat + TOKEN_LIFETIME,
            "aio": opaque_token(24),
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": "1",
            "idp": f"https://sts.windows.net/{self.state.tenant_id}/",
            "idtyp": "app",
            "oid": app.sp_id,
            "rh": "0.emulator.",
            "sub": app.sp_id,
            "tenant_region_scope": "EU",
            "tid": self.state.tenant_id,
            "uti": opaque_token(16),
            "ver": "1.0",
            "xms_tcdt": 1600000000,
        }
        if app.roles:
            claims["roles"] = sorted(app.roles)
        return json_response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": TOKEN_LIFETIME,
                "ext_expires_in": TOKEN_LIFETIME,
                "access_token": jwt_encode(claims, self.key),
            },
            {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
            content_type="application/json; charset=utf-8",
        )

    def _delegated_scopes(self, app: App, requested: list[str]) -> list[str]:
        granted: list[str] = []
        for s in requested:
            n = _norm_scope(s)
            if n in RESERVED_SCOPES:
                continue
            if n == ".default":
                granted.extend(sorted(app.delegated_scopes - RESERVED_SCOPES))
                continue
            if n not in {d for d in app.delegated_scopes}:
                raise AadError(
                    400,
                    "invalid_grant",
                    65001,
                    f"The user or administrator has not consented to use the "
                    f"application with ID '{app.client_id}' named "
                    f"'{app.display_name}'. Send an interactive authorization "
                    f"request for this user and resource. (scope {s})",
                )
            granted.append(n)
        return sorted(set(granted))

    def _delegated_tokens(
        self,
        app: App,
        user: dict[str, Any],
        requested: list[str],
        nonce: str | None,
        now: datetime,
        *,
        offline: bool,
    ) -> Response:
        """Access + id token; a refresh token only when `offline` (the offline_access scope
        was requested, as Entra requires)."""
        scp = self._delegated_scopes(app, requested)
        iat = int(now.timestamp())
        tid = self.state.tenant_id
        at_claims = {
            "aud": GRAPH_AUDIENCE,
            "iss": f"https://sts.windows.net/{tid}/",
            "iat": iat,
            "nbf": iat,
            "exp": iat + TOKEN_LIFETIME,
            "acct": 0,
            "amr": ["pwd"],
            "app_displayname": app.display_name,
            "appid": app.client_id,
            "appidacr": "1",
            "family_name": user.get("surname"),
            "given_name": user.get("givenName"),
            "idtyp": "user",
            "name": user["displayName"],
            "oid": user["id"],
            "scp": " ".join(scp),
            "sub": user["id"],
            "tid": tid,
            "unique_name": user["userPrincipalName"],
            "upn": user["userPrincipalName"],
            "uti": opaque_token(16),
            "ver": "1.0",
        }
        id_claims: dict[str, Any] = {
            "aud": app.client_id,
            "iss": self.issuer(),
            "iat": iat,
            "nbf": iat,
            "exp": iat + 3600,
            "name": user["displayName"],
            "oid": user["id"],
            "preferred_username": user["userPrincipalName"],
            "rh": "0.emulator.",
            "sub": b64url(hashlib.sha256((app.client_id + user["id"]).encode()).digest()[:24]),
            "tid": tid,
            "uti": opaque_token(16),
            "ver": "2.0",
        }
        if nonce:
            id_claims["nonce"] = nonce
        scope_out = " ".join(dict.fromkeys([*requested] or scp))
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "scope": scope_out,
            "expires_in": TOKEN_LIFETIME,
            "ext_expires_in": TOKEN_LIFETIME,
            "access_token": jwt_encode(at_claims, self.key),
        }
        if offline:
            rt = "0.AAAA" + opaque_token(48)
            self.state.refresh_tokens[rt] = {
                "client_id": app.client_id,
                "user_id": user["id"],
                "scopes": scp,
                "expires": now + REFRESH_LIFETIME,
            }
            while len(self.state.refresh_tokens) > 10_000:
                self.state.refresh_tokens.popitem(last=False)
            body["refresh_token"] = rt
        body["id_token"] = self._id_token(id_claims)
        body["client_info"] = b64url(json.dumps({"uid": user["id"], "utid": tid}).encode())
        return json_response(
            200,
            body,
            {"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"},
            content_type="application/json; charset=utf-8",
        )

    def _id_token(self, claims: dict[str, Any]) -> str:
        if self.oidc_key is None:
            return jwt_encode(claims, self.key)
        return sign_in.id_token(self.state, self.oidc_key, claims)

    def _auth_code(self, app: App, form: dict[str, str], now: datetime) -> Response:
        code = form.get("code") or ""
        rec = self.state.auth_codes.get(code)
        if rec is None:
            raise AadError(
                400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if rec.get("redeemed"):
            raise AadError(
                400,
                "invalid_grant",
                54005,
                "OAuth2 Authorization code was already redeemed, please retry with "
                "a new valid code or use an existing refresh token.",
            )
        if rec["expires"] <= now:
            raise AadError(
                400,
                "invalid_grant",
                70008,
                "The provided authorization code or refresh token has expired due "
                "to inactivity. Send a new interactive authorization request for "
                "this user and resource.",
            )
        if rec["client_id"] != app.client_id:
            raise AadError(
                400,
                "invalid_grant",
                70000,
                "The provided value for the 'code' parameter is not valid. The code "
                "was issued to a different client.",
            )
        if form.get("redirect_uri") != rec["redirect_uri"]:
            raise AadError(
                400,
                "invalid_grant",
                500112,
                f"The reply address '{form.get('redirect_uri')}' does not match the "
                f"reply address '{rec['redirect_uri']}' provided when requesting "
                "Authorization code.",
            )
        challenge = rec.get("code_challenge")
        if challenge:
            verifier = form.get("code_verifier") or ""
            method = (rec.get("code_challenge_method") or "plain").upper()
            computed = _pkce_s256(verifier) if method == "S256" else verifier
            if not verifier or computed != challenge:
                raise AadError(
                    400,
                    "invalid_grant",
                    501481,
                    "The Code_Verifier does not match the code_challenge supplied "
                    "in the authorization request.",
                )
        rec["redeemed"] = True
        user = self.state.users.get(rec["user_id"])
        if user is None:
            raise AadError(400, "invalid_grant", 50034, "The user account does not exist.")
        requested = (form.get("scope") or rec["scope"]).split()
        asked = {_norm_scope(s).lower() for s in [*rec["scope"].split(), *requested]}
        return self._delegated_tokens(
            app, user, requested, rec.get("nonce"), now, offline="offline_access" in asked
        )

    def _refresh(self, app: App, form: dict[str, str], now: datetime) -> Response:
        rt = form.get("refresh_token") or ""
        rec = self.state.refresh_tokens.get(rt)
        if rec is None or rec["client_id"] != app.client_id:
            raise AadError(
                400, "invalid_grant", 9002313, "Invalid request. Request is malformed or invalid."
            )
        if rec["expires"] <= now:
            raise AadError(
                400, "invalid_grant", 700082, "The refresh token has expired due to inactivity."
            )
        user = self.state.users.get(rec["user_id"])
        if user is None:
            raise AadError(400, "invalid_grant", 50034, "The user account does not exist.")
        if sign_in.disabled_reason(user):
            raise AadError(400, "invalid_grant", 50057, "The user account is disabled.")
        requested = (form.get("scope") or " ".join(rec["scopes"])).split()
        # A refresh token exists only because offline_access was granted: it is renewed.
        return self._delegated_tokens(app, user, requested, None, now, offline=True)

    # ------------------------------------------------------------------ authorize endpoint

    def authorize(self, tenant: str, req: Request) -> Response:
        q = req.query
        now = self.state.clock.now()
        if not self.tenant_matches(tenant):
            return self._error_page(400, 90002, f"Tenant '{tenant}' not found.")
        with self.state.lock:
            app = self.state.apps.get(q.get("client_id", ""))
            if app is None:
                return self._error_page(
                    400,
                    700016,
                    f"Application with identifier "
                    f"'{q.get('client_id')}' was not found in the directory.",
                )
            redirect_uri = q.get("redirect_uri", "")
            if not self._redirect_ok(app, redirect_uri):
                return self._error_page(
                    400,
                    50011,
                    f"The redirect URI '{redirect_uri}' "
                    "specified in the request does not match the redirect "
                    "URIs configured for the application.",
                )
            params: dict[str, str] = {}
            if q.get("response_type") != "code":
                params = {
                    "error": "unsupported_response_type",
                    "error_description": "AADSTS700054: response_type 'id_token' is not "
                    "enabled for the application.",
                }
            elif "openid" not in (q.get("scope") or "").split() and not q.get("scope"):
                params = {
                    "error": "invalid_request",
                    "error_description": "AADSTS900144: The request body must contain "
                    "the following parameter: 'scope'.",
                }
            else:
                if (q.get("prompt") or "").lower() == "select_account":
                    return self._picker(tenant, req)
                hint = q.get("login_hint") or self.state.service_account_upn or ""
                user = self.state.resolve_user(hint)
                if user is None:
                    params = {
                        "error": "access_denied",
                        "error_description": f"AADSTS50034: The user account {hint} "
                        "does not exist in the directory.",
                    }
                elif sign_in.disabled_reason(user):
                    params = {
                        "error": "access_denied",
                        "error_description": sign_in.disabled_reason(user) or "",
                    }
                else:
                    code = "0.AAAA" + opaque_token(48)
                    self.state.auth_codes[code] = {
                        "client_id": app.client_id,
                        "redirect_uri": redirect_uri,
                        "scope": q.get("scope", ""),
                        "user_id": user["id"],
                        "nonce": q.get("nonce"),
                        "code_challenge": q.get("code_challenge"),
                        "code_challenge_method": q.get("code_challenge_method"),
                        "expires": now + CODE_LIFETIME,
                    }
                    while len(self.state.auth_codes) > 10_000:
                        self.state.auth_codes.popitem(last=False)
                    params = {"code": code}
            if q.get("state") is not None:
                params["state"] = q["state"]
            params["session_state"] = str(uuid.uuid4())
        mode = (q.get("response_mode") or "query").lower()
        if mode == "form_post":
            inputs = "".join(
                f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}"/>'
                for k, v in params.items()
            )
            page = (
                f'<html><body onload="document.forms[0].submit()"><form method="POST" '
                f'action="{html.escape(redirect_uri)}">{inputs}<noscript><button>'
                f"Continue</button></noscript></form></body></html>"
            )
            return text_response(200, page, "text/html; charset=utf-8")
        parts = urlsplit(redirect_uri)
        if mode == "fragment":
            location = urlunsplit(
                (parts.scheme, parts.netloc, parts.path, parts.query, urlencode(params))
            )
        else:
            query = (parts.query + "&" if parts.query else "") + urlencode(params)
            location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
        return empty_response(302, {"Location": location, "Cache-Control": "no-store"})

    def _redirect_ok(self, app: App, uri: str) -> bool:
        # Entra matches the reply URL exactly against the app registration's list (scheme,
        # host, port, path); an app with no registered redirect URI accepts none (AADSTS50011).
        return bool(uri) and uri in app.redirect_uris

    def _picker(self, tenant: str, req: Request) -> Response:
        return sign_in.picker_page(self.state, tenant, req.query)

    def _error_page(self, status: int, code: int, message: str) -> Response:
        page = (
            f"<!doctype html><html><body><h1>Sign in error</h1><p>AADSTS{code}: "
            f"{html.escape(message)}</p></body></html>"
        )
        return text_response(status, page, "text/html; charset=utf-8")

    # ------------------------------------------------------------------ Graph side

    def authenticate(self, req: Request) -> Principal:
        auth = req.headers.get("Authorization") or ""
        if not auth.strip():
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.")
        if not auth.lower().startswith("bearer "):
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )
        token = auth[7:].strip()
        if token.count(".") != 2:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "IDX14100: JWT is not well formed, there are no dots (.).\n"
                "The token needs to be in JWS or JWE Compact Serialization Format.",
            )
        claims = self._verified.get(token)
        if claims is None:
            claims = jwt_decode(token, self.key)
            if claims is not None:
                if len(self._verified) >= VERIFIED_TOKENS_MAX:
                    self._verified.clear()
                self._verified[token] = claims
        if claims is None:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid signature.",
            )
        if claims.get("aud") not in (
            GRAPH_AUDIENCE,
            GRAPH_AUDIENCE + "/",
            "00000003-0000-0000-c000-000000000000",
        ):
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )
        if claims.get("tid") != self.state.tenant_id:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid issuer or signature.",
            )
        now = self.state.clock.timestamp()
        if float(claims.get("exp", 0)) <= now:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is expired.",
            )
        if float(claims.get("nbf", 0)) > now + 300:
            raise GraphError(
                401,
                "InvalidAuthenticationToken",
                "Lifetime validation failed, the token is not yet valid.",
            )
        if claims.get("idtyp") == "user" or "scp" in claims:
            return Principal(
                app_id=claims.get("appid", ""),
                delegated=True,
                scopes=set((claims.get("scp") or "").split()),
                user_id=claims.get("oid"),
                upn=claims.get("upn"),
                claims=claims,
            )
        return Principal(
            app_id=claims.get("appid", ""),
            delegated=False,
            roles=set(claims.get("roles") or []),
            claims=claims,
        )


def now_iso(state: EmulatorState) -> str:
    return iso(state.clock.now())
