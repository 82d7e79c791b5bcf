"""Keep secrets out of logs, stored errors and audit payloads."""

from __future__ import annotations

import re
from typing import Any

MASK = "••••••"
SECRET_KEY_PATTERN = re.compile(
    r"secret|password|passwd|token|credential|authorization|api[_-]?key|client[_-]?state|"
    r"cookie|private|refresh|cache",
    re.IGNORECASE,
)
_SECRET_TEXT_PATTERNS = (
    re.compile(r"\bfgp_[A-Za-z0-9_-]{8,}"),  # our API tokens
    re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{8,}"),
    re.compile(
        r"(?i)((?:client_secret|password|refresh_token|access_token)[\"']?\s*[=:]\s*"
        r"[\"']?)[^\s&\"',}]+"
    ),
)


def redact_text(text: str) -> str:
    for pattern in _SECRET_TEXT_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


def mask_secrets(value: Any) -> Any:
    """A copy of value with secret-looking keys and values masked, in JSON-safe types."""
    if isinstance(value, dict):
        return {
            str(key): MASK if SECRET_KEY_PATTERN.search(str(key)) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))
