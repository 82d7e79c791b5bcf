"""The JSON API's bearer tokens, for people and service clients alike: their values, their
stored form and the one `authenticate`.

A value is `<kind prefix><8 hex>_<43 url-safe characters>`: `fgp_` for a person's API token,
`fgs_` for a service client's. The kind prefix and the 8 hex characters (the public prefix)
let people and secret scanners recognise a token and let the console name it; only the
SHA-256 of the whole value is stored, so a database read gives nobody a usable token.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from portal.access.models import BearerToken, ServiceClient

PERSON_TOKEN_PREFIX = "fgp_"
CLIENT_TOKEN_PREFIX = "fgs_"
KIND_PREFIXES = (PERSON_TOKEN_PREFIX, CLIENT_TOKEN_PREFIX)
MAX_VALUE_LENGTH = 200
_PUBLIC_HEX = 8
# last_used_at is refreshed at most this often, so reads do not become writes.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _new_value(kind_prefix: str) -> tuple[str, str]:
    """(full value, public prefix)."""
    visible = secrets.token_hex(_PUBLIC_HEX // 2)
    return (
        f"{kind_prefix}{visible}_{secrets.token_urlsafe(32)}",
        f"{kind_prefix}{visible}",
    )


def issue(
    *,
    owner: Any,
    created_by: str,
    expires_at: datetime | None,
    name: str = "",
    scopes: list[str] | None = None,
) -> tuple[BearerToken, str]:
    """Store a new token for a person (a user) or a ServiceClient; returns it and its value,
    which the caller shows once and never stores. The caller checks permission and audits."""
    is_client = isinstance(owner, ServiceClient)
    raw, prefix = _new_value(CLIENT_TOKEN_PREFIX if is_client else PERSON_TOKEN_PREFIX)
    token = BearerToken.objects.create(
        user=None if is_client else owner,
        client=owner if is_client else None,
        name=name[:100],
        prefix=prefix,
        token_hash=hash_token(raw),
        scopes=[] if is_client else sorted(set(scopes or [])),
        created_by=created_by[:150],
        expires_at=expires_at,
    )
    return token, raw


def public_prefix(raw: str) -> str | None:
    """The visible `fgp_xxxxxxxx` / `fgs_xxxxxxxx` part of a value shaped like one of our
    tokens, else None (the bad-token limiter counts failures per prefix; the secret part is
    never kept)."""
    for kind_prefix in KIND_PREFIXES:
        if raw.startswith(kind_prefix):
            head, sep, _ = raw[len(kind_prefix) :].partition("_")
            if sep and len(head) == _PUBLIC_HEX and all(c in "0123456789abcdef" for c in head):
                return f"{kind_prefix}{head}"
    return None


def is_client_value(raw: str) -> bool:
    return raw.startswith(CLIENT_TOKEN_PREFIX)


def authenticate(raw: str) -> BearerToken | None:
    """The usable token with this value (its person or client loaded), or None."""
    if not raw.startswith(KIND_PREFIXES) or len(raw) > MAX_VALUE_LENGTH:
        return None
    token = (
        BearerToken.objects.select_related("user", "client")
        .filter(token_hash=hash_token(raw))
        .first()
    )
    if token is None or not token.is_usable:
        return None
    # The value's kind prefix is part of what was hashed, so it always matches the owner; a
    # row that says otherwise is refused rather than trusted.
    if (token.client_id is not None) != is_client_value(raw):
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        BearerToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token
