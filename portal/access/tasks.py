"""Thin django-q2 entry points for the access app."""

from __future__ import annotations

from portal.access.credential_limits import prune_credential_failures as _prune


def prune_credential_failures() -> int:
    return _prune()
