"""Encryption of secrets at rest (client secrets, token caches, clientState values, event
endpoint signing secrets).

MultiFernet over FIELD_ENCRYPTION_KEYS (newest first): encryption uses the first key,
decryption tries each, so a key rotation is "prepend the new key, run `rotate()` over the
stored values, then drop the old key". The keys are deliberately not SECRET_KEY.
"""

from __future__ import annotations

import hashlib

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class DecryptionError(Exception):
    """No configured key decrypts the value (a key was removed too early, or data is corrupt)."""


def _fernet() -> MultiFernet:
    keys = [k for k in settings.FIELD_ENCRYPTION_KEYS if k]
    if not keys:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS is empty: set it to one or more Fernet keys (newest first, "
            'comma-separated). Generate one with: python -c "from cryptography.fernet import '
            'Fernet; print(Fernet.generate_key().decode())"'
        )
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            # Say which key is broken, never what it is.
            raise ImproperlyConfigured(
                f"FIELD_ENCRYPTION_KEYS entry #{position} is not a valid Fernet key "
                "(32 url-safe base64-encoded bytes)."
            ) from None
    return MultiFernet(fernets)


def encrypt(value: str) -> str:
    return _fernet().encrypt(value.encode("utf-8")).decode("ascii")


def decrypt(token: str) -> str:
    try:
        return _fernet().decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError, ValueError):
        raise DecryptionError(
            "None of the FIELD_ENCRYPTION_KEYS decrypts this value: was a key removed before "
            "the stored values were re-encrypted (rotate)?"
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt a stored value under the newest key."""
    try:
        return _fernet().rotate(token.encode("ascii")).decode("ascii")
    except (InvalidToken, ValueError):
        raise DecryptionError("None of the FIELD_ENCRYPTION_KEYS decrypts this value.") from None


def fingerprint(secret: str) -> str:
    """A short, stable identifier of a secret that reveals none of it (SHA-256 prefix)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:12]
