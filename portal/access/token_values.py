"""Random bearer-token values and their stored form (SHA-256), shared by API tokens and
service clients."""

from __future__ import annotations

import hashlib
import secrets


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def new_token_value(prefix: str) -> tuple[str, str]:
    """(full token, visible prefix). The prefix lets people and secret scanners spot it."""
    visible = secrets.token_hex(4)
    return f"{prefix}{visible}_{secrets.token_urlsafe(32)}", f"{prefix}{visible}"
