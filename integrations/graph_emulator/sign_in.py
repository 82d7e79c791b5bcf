"""Staff sign-in (OpenID Connect) on the emulated identity platform.

What a real Entra tenant gives an app that signs people in, and what the portal's SSO needs
to be tested end to end: RS256-signed id tokens whose keys are published at the JWKS URI,
app roles per user (the ``roles`` claim), group object ids (``groups``), the
authentication methods (``amr``), disabled accounts refused, and a sign-in page listing the
demo users. Tests can make the next id token bad in one specific way (``tamper``) to prove
the portal refuses it.

Kept apart from identity.py (token endpoint mechanics) so the two change independently.
"""

from __future__ import annotations

import base64
import hashlib
import html
import os
import uuid
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlencode

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .httptypes import Response, json_response, text_response

KEY_FILE = "oidc-signing-key.pem"
DEFAULT_AMR = ("pwd",)
# Demo staff: the first seeded person with each job title gets a portal app role, so the
# demo offers one Entra user per portal role (and everyone else has none).
DEMO_ROLES = {
    "maria.kowalski": ("Portal.Admin",),
    "hannah.lindqvist": ("Portal.Operator",),
    "priya.raman": ("Portal.Support",),
    "sofia.marchetti": ("Portal.Viewer",),
}
DEMO_AMR = ("pwd", "mfa")
TAMPER_MODES = (
    "forged",
    "expired",
    "wrong_audience",
    "wrong_tenant",
    "wrong_nonce",
    "wrong_issuer",
)


class SigningKey:
    """The tenant's RSA signing key (persisted, so tokens survive a restart) and its JWKS."""

    def __init__(self, state_dir: Path) -> None:
        path = state_dir / KEY_FILE
        if path.exists():
            # The file holds the RSA key this class generated and wrote below.
            self.private = cast(
                rsa.RSAPrivateKey, serialization.load_pem_private_key(path.read_bytes(), None)
            )
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(
                self.private.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            os.chmod(tmp, 0o600)
            tmp.replace(path)
        public_der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        digest = hashlib.sha256(public_der).digest()[:20]
        self.kid = base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def jwks(self) -> dict[str, Any]:
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def sign(self, claims: dict[str, Any], *, forged: bool = False) -> str:
        key = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
            if forged
            else self.private
        )
        return jwt.encode(claims, key, algorithm="RS256", headers={"kid": self.kid, "typ": "JWT"})


def seed_demo_profiles(state: Any) -> None:
    """Give the demo staff their app roles (caller holds the lock)."""
    for user in state.users.values():
        local = user["userPrincipalName"].split("@")[0].lower()
        if local in DEMO_ROLES:
            state.sign_in_profiles[user["id"]] = {
                "app_roles": list(DEMO_ROLES[local]),
                "amr": list(DEMO_AMR),
                "groups": [],
            }


def profile(state: Any, user_id: str) -> dict[str, Any]:
    return state.sign_in_profiles.setdefault(
        user_id, {"app_roles": [], "amr": list(DEFAULT_AMR), "groups": []}
    )


def disabled_reason(user: dict[str, Any]) -> str | None:
    """AADSTS50057 for a disabled account (the day someone leaves), else None."""
    if user.get("accountEnabled", True):
        return None
    return (
        f"AADSTS50057: The user account {user['userPrincipalName']} is disabled. "
        "The account has been disabled by an administrator."
    )


def id_token(state: Any, key: SigningKey, claims: dict[str, Any]) -> str:
    """Sign an id token for ``claims['oid']`` with the user's roles, groups and amr; apply
    (and consume) the tamper mode a test asked for. Caller holds the lock."""
    prof = profile(state, claims["oid"])
    claims = {**claims, "amr": list(prof["amr"])}
    if prof["app_roles"]:
        claims["roles"] = list(prof["app_roles"])
    if prof["groups"]:
        claims["groups"] = list(prof["groups"])
    mode, state.id_token_tamper = state.id_token_tamper, None
    if mode == "expired":
        claims["iat"] = claims["nbf"] = claims["iat"] - 7200
        claims["exp"] = claims["iat"] + 3600
    elif mode == "wrong_audience":
        claims["aud"] = str(uuid.uuid4())
    elif mode == "wrong_tenant":
        other = str(uuid.uuid4())
        claims["tid"] = other
        claims["iss"] = claims["iss"].replace(state.tenant_id, other)
    elif mode == "wrong_issuer":
        claims["iss"] = "https://sts.example.invalid/v2.0"
    elif mode == "wrong_nonce":
        claims["nonce"] = hashlib.sha256(b"someone else's nonce").hexdigest()
    return key.sign(claims, forged=mode == "forged")


# ---------------------------------------------------------------------- control API


def control(state: Any, method: str, segs: list[str], body: dict[str, Any]) -> Any:
    """``PUT users/{upn}/app-roles|amr|groups``, ``PUT users/{upn}/account-enabled``,
    ``POST sign-in/tamper``. Returns the JSON answer, or None when no route matches.
    Raises ValueError (a 400) for a bad body, LookupError for an unknown user."""
    if segs == ["sign-in", "tamper"] and method == "POST":
        mode = body.get("mode")
        if mode not in (*TAMPER_MODES, None):
            raise ValueError(f"mode must be one of {', '.join(TAMPER_MODES)} (or null)")
        with state.lock:
            state.id_token_tamper = mode
        return {"next_id_token": mode}
    if len(segs) != 3 or segs[0] != "users" or method not in ("PUT", "POST"):
        return None
    with state.lock:
        user = state.resolve_user(segs[1])
        if user is None:
            raise LookupError(f"unknown user {segs[1]!r}")
        prof = profile(state, user["id"])
        field = {
            "app-roles": ("roles", "app_roles"),
            "amr": ("amr", "amr"),
            "groups": ("groups", "groups"),
        }.get(segs[2])
        if field is not None:
            values = body.get(field[0])
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f'body must be {{"{field[0]}": ["...", ...]}}')
            prof[field[1]] = list(dict.fromkeys(values))
        elif segs[2] == "account-enabled":
            if not isinstance(body.get("enabled"), bool):
                raise ValueError('body must be {"enabled": true|false}')
            user["accountEnabled"] = body["enabled"]
            if not user["accountEnabled"]:  # revoke sessions, as disabling does in Entra
                for rt in [
                    k for k, v in state.refresh_tokens.items() if v["user_id"] == user["id"]
                ]:
                    del state.refresh_tokens[rt]
        else:
            return None
        return {
            "userPrincipalName": user["userPrincipalName"],
            "accountEnabled": user.get("accountEnabled", True),
            **prof,
        }


# ---------------------------------------------------------------------- sign-in page


def picker_page(state: Any, tenant: str, query: dict[str, str]) -> Response:
    """The emulator's sign-in page: the demo staff (with their app roles) first, then
    everyone else in the directory. Caller holds the lock."""
    q = {k: v for k, v in query.items() if k not in ("prompt", "login_hint")}

    def row(user: dict[str, Any]) -> str:
        link = f"/{tenant}/oauth2/v2.0/authorize?" + urlencode(
            {**q, "login_hint": user["userPrincipalName"]}
        )
        roles = ", ".join(profile(state, user["id"])["app_roles"]) or "no app role"
        return (
            f'<li><a href="{html.escape(link)}">{html.escape(user["displayName"])}</a> '
            f"&lt;{html.escape(user['userPrincipalName'])}&gt; "
            f"<small>({html.escape(roles)})</small></li>"
        )

    people = sorted(state.users.values(), key=lambda u: u["displayName"])
    with_roles = [u for u in people if state.sign_in_profiles.get(u["id"], {}).get("app_roles")]
    others = [u for u in people if u not in with_roles]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<link rel="icon" href="data:,"><title>Sign in to your account</title></head>'
        "<body><h1>Graph emulator &mdash; sign in</h1>"
        "<p>Pick an account. This is the local emulator of Microsoft Entra ID: nobody "
        "types a password here.</p>"
        "<h2>Demo staff</h2><ul>" + "".join(row(u) for u in with_roles) + "</ul>"
        "<h2>Everyone else</h2><ul>" + "".join(row(u) for u in others) + "</ul>"
        "</body></html>"
    )
    return text_response(200, page, "text/html; charset=utf-8")


def jwks_response(key: SigningKey) -> Response:
    return json_response(200, key.jwks(), content_type="application/json; charset=utf-8")
