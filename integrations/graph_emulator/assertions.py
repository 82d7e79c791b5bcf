"""Client assertions at the token endpoint: certificate credentials and federated identity
credentials (workload identity), checked as Entra ID checks them and no stricter.

Certificate (Microsoft Learn, "Microsoft identity platform application authentication
certificate credentials"): a JWT signed with the key of a certificate uploaded to the app,
named by ``x5t`` (SHA-1, with RS256) or ``x5t#S256`` (SHA-256, with PS256); ``aud`` = the
token endpoint; ``iss`` = ``sub`` = the client id; ``exp`` and, when present, ``nbf``.

Federated (Microsoft Learn, "Workload identity federation"): the external token's ``iss``,
``sub`` and ``aud`` must match a federated credential registered on the app, and its signature
must verify against that issuer's keys.

Errors carry Entra's codes: AADSTS50027 malformed, AADSTS700027 signature or key,
AADSTS700024 outside its valid time, AADSTS700021 issuer/subject not the client,
AADSTS700023 audience, AADSTS70021 no matching federated identity record.
"""

from __future__ import annotations

import base64
import json
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from .state import App, AppCertificate, FederatedCredential

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Entra tolerates a few minutes of clock skew between the client and itself.
CLOCK_SKEW_SECONDS = 300
JWKS_FETCH_TIMEOUT = 5.0


@dataclass
class AssertionRejected(Exception):
    code: int
    description: str


def load_certificate(pem: str, display_name: str = "certificate") -> AppCertificate:
    """An uploaded certificate (PEM, public part). Raises ValueError when unreadable."""
    certificate = x509.load_pem_x509_certificate(pem.strip().encode("ascii"))
    return AppCertificate(
        pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
        thumbprint=certificate.fingerprint(hashes.SHA1()).hex().upper(),  # noqa: S303
        thumbprint_sha256=certificate.fingerprint(hashes.SHA256()).hex(),
        display_name=display_name,
        start=certificate.not_valid_before_utc,
        end=certificate.not_valid_after_utc,
    )


def _b64url_hex(value: str) -> str:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    except (ValueError, TypeError):
        return ""


def _token_endpoint_matches(aud: Any, tenant_names: set[str]) -> bool:
    """``aud`` is this tenant's token endpoint (v2 or v1, by tenant id or domain)."""
    audiences = aud if isinstance(aud, list) else [aud]
    for value in audiences:
        parts = urlsplit(str(value))
        segs = [s for s in parts.path.split("/") if s]
        if (
            parts.scheme == "https"
            and len(segs) >= 3
            and segs[0].lower() in tenant_names
            and [s.lower() for s in segs[1:]] in (["oauth2", "v2.0", "token"], ["oauth2", "token"])
        ):
            return True
    return False


def _check_times(claims: dict[str, Any], now: float) -> None:
    try:
        exp = float(claims["exp"])
        nbf = float(claims.get("nbf", claims.get("iat", now)))
    except (KeyError, TypeError, ValueError):
        raise AssertionRejected(
            700024, "Client assertion is not within its valid time range: no 'exp' claim."
        ) from None
    if exp + CLOCK_SKEW_SECONDS <= now or nbf - CLOCK_SKEW_SECONDS > now:
        raise AssertionRejected(
            700024,
            f"Client assertion is not within its valid time range. Current time: "
            f"{datetime.fromtimestamp(now):%Y-%m-%dT%H:%M:%S}, assertion valid from "
            f"{datetime.fromtimestamp(nbf):%Y-%m-%dT%H:%M:%S}, expiry time of assertion "
            f"{datetime.fromtimestamp(exp):%Y-%m-%dT%H:%M:%S}.",
        )


def _decode(token: str, key: Any, algorithm: str) -> dict[str, Any]:
    try:
        return jwt.decode(
            token,
            key,
            algorithms=[algorithm],
            # Times, audience and issuer are checked by the callers, with Entra's rules.
            options={
                "verify_exp": False,
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidTokenError:
        raise AssertionRejected(700027, "Client assertion failed signature validation.") from None


def verify(
    app: App,
    token: str,
    *,
    tenant_names: set[str],
    now: float,
    issuer_keys: Callable[[FederatedCredential], dict[str, Any]],
) -> None:
    """Accept `token` as `app`'s client assertion or raise AssertionRejected."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise AssertionRejected(50027, "JWT token is invalid or malformed.") from None
    if "x5t" in header or "x5t#S256" in header:
        _verify_certificate(app, token, header, claims, tenant_names, now)
    else:
        _verify_federated(app, token, header, claims, now, issuer_keys)


def _verify_certificate(
    app: App,
    token: str,
    header: dict[str, Any],
    claims: dict[str, Any],
    tenant_names: set[str],
    now: float,
) -> None:
    sha256 = _b64url_hex(str(header.get("x5t#S256") or ""))
    sha1 = _b64url_hex(str(header.get("x5t") or "")).upper()
    certificate = next(
        (
            c
            for c in app.certificates
            if (sha256 and c.thumbprint_sha256 == sha256) or (sha1 and c.thumbprint == sha1)
        ),
        None,
    )
    if certificate is None:
        named = header.get("x5t#S256") or header.get("x5t")
        raise AssertionRejected(
            700027,
            f"Client assertion failed signature validation. (Reason - The key was not found., "
            f"Thumbprint of key used by client: '{named}'. Please visit the Azure Portal, "
            f"Graph Explorer or directly use MS Graph to see configured keys for app Id "
            f"'{app.client_id}'.)",
        )
    algorithm = str(header.get("alg") or "")
    if algorithm not in ("RS256", "PS256"):
        raise AssertionRejected(
            700027, f"Client assertion failed signature validation: algorithm '{algorithm}'."
        )
    public_key = x509.load_pem_x509_certificate(certificate.pem.encode("ascii")).public_key()
    _decode(token, public_key, algorithm)
    if certificate.end is not None and certificate.end.timestamp() <= now:
        raise AssertionRejected(
            700027,
            "Client assertion contains an invalid signature. [Reason - The key used is "
            f"expired., Thumbprint of key used by client: '{certificate.thumbprint}']",
        )
    if claims.get("iss") != app.client_id or claims.get("sub") != app.client_id:
        raise AssertionRejected(
            700021, "Client assertion application identifier doesn't match 'client_id' parameter."
        )
    if not _token_endpoint_matches(claims.get("aud"), tenant_names):
        raise AssertionRejected(
            700023, "Client assertion audience claim does not match Realm issuer."
        )
    _check_times(claims, now)


def _verify_federated(
    app: App,
    token: str,
    header: dict[str, Any],
    claims: dict[str, Any],
    now: float,
    issuer_keys: Callable[[FederatedCredential], dict[str, Any]],
) -> None:
    issuer, subject = str(claims.get("iss") or ""), str(claims.get("sub") or "")
    audiences = claims.get("aud")
    audiences = [str(a) for a in audiences] if isinstance(audiences, list) else [str(audiences)]
    record = next(
        (
            f
            for f in app.federated_credentials
            if f.issuer == issuer
            and f.subject == subject
            and any(a in f.audiences for a in audiences)
        ),
        None,
    )
    if record is None:
        raise AssertionRejected(
            70021,
            f"No matching federated identity record found for presented assertion. Assertion "
            f"Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: "
            f"'{','.join(audiences)}'.",
        )
    algorithm = str(header.get("alg") or "RS256")
    if algorithm not in ("RS256", "PS256", "ES256"):
        raise AssertionRejected(
            700027, f"Client assertion failed signature validation: algorithm '{algorithm}'."
        )
    try:
        keys = issuer_keys(record).get("keys") or []
    except (OSError, ValueError) as exc:
        raise AssertionRejected(
            700027,
            f"Client assertion failed signature validation: the issuer's keys could "
            f"not be read ({type(exc).__name__}).",
        ) from None
    kid = header.get("kid")
    candidates = [k for k in keys if kid is None or k.get("kid") == kid]
    if not candidates:
        raise AssertionRejected(
            700027,
            f"Client assertion failed signature validation. (Reason - The key was not found "
            f"in the issuer's keys: kid '{kid}'.)",
        )
    for jwk in candidates:
        try:
            key = jwt.PyJWK(jwk, algorithm).key
            _decode(token, key, algorithm)
            break
        except (AssertionRejected, jwt.PyJWKError):
            continue
    else:
        raise AssertionRejected(700027, "Client assertion failed signature validation.")
    _check_times(claims, now)


def fetch_jwks(uri: str) -> dict[str, Any]:
    """The JWKS at `uri` (a registered federated credential's jwksUri)."""
    with urllib.request.urlopen(uri, timeout=JWKS_FETCH_TIMEOUT) as response:  # noqa: S310
        data = json.loads(response.read(1_000_000))
    if not isinstance(data, dict):
        raise ValueError("the JWKS is not a JSON object")
    return data
