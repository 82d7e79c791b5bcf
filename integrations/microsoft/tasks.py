"""Thin django-q2 entry points: take ids, call a service. Safe to run twice."""

from __future__ import annotations

from integrations.microsoft.credential_lifecycle import retire_expired_grace as retire


def retire_expired_grace() -> int:
    """Schedule entry: retire credentials whose grace period is over."""

    return retire()
