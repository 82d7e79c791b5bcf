"""Text from outside on its way into the database."""

from __future__ import annotations

from typing import Any


def without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold NUL: an attacker's NUL (a URL path, a header, a
    refused sign-in's error text) must not turn the record of a refusal into a 500 and lose
    it. NUL becomes U+FFFD, in strings and inside dicts and lists."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value
