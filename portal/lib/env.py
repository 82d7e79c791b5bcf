"""Typed, loud readers for environment variables.

Every setting comes from the environment (or a `.env` file, see settings.py). A value that is
present but malformed raises ImproperlyConfigured naming the variable, so a typo in a
deployment fails at start-up instead of silently falling back to a default.
Secrets may also come from `<NAME>_FILE` (a path, as Kubernetes and Docker secrets mount them).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str:
    value = _raw(name)
    if value is None:
        if required:
            raise ImproperlyConfigured(f"{name} must be set.")
        return default if default is not None else ""
    return value


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(
        f"{name} must be a boolean (true/false, 1/0, yes/no), not {value!r}."
    )


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    value = _raw(name)
    if value is None:
        result = default
    else:
        try:
            result = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {result}.")
    if maximum is not None and result > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {result}.")
    return result


def env_float(
    name: str, default: float, *, minimum: float | None = None, maximum: float | None = None
) -> float:
    value = _raw(name)
    if value is None:
        result = default
    else:
        try:
            result = float(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None
    if minimum is not None and result < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {result}.")
    if maximum is not None and result > maximum:
        raise ImproperlyConfigured(f"{name} must be at most {maximum}, not {result}.")
    return result


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = _raw(name)
    if value is None:
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str, default: list[str] | None = None) -> list[str]:
    """Comma-separated IP addresses or networks (`10.0.0.0/8`, `192.0.2.7`, `fd00::/8`)."""
    values = env_list(name, default)
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list IP addresses or networks (like 10.0.0.0/8), not {value!r}."
            ) from None
    return values


def env_secret(name: str, default: str | None = None, *, required: bool = False) -> str:
    """A secret from `NAME` or from the file named by `NAME_FILE` (never both).

    The error messages name the variable, never its value.
    """
    direct = _raw(name)
    file_name = _raw(f"{name}_FILE")
    if direct is not None and file_name is not None:
        raise ImproperlyConfigured(f"Set either {name} or {name}_FILE, not both.")
    if file_name is not None:
        path = Path(file_name)
        try:
            content = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"{name}_FILE points at {file_name!r}, which cannot be read ({exc.strerror})."
            ) from None
        if not content:
            raise ImproperlyConfigured(f"{name}_FILE points at an empty file ({file_name!r}).")
        return content
    if direct is not None:
        return direct
    if required:
        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set.")
    return default if default is not None else ""
