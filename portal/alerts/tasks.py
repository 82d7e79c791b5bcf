"""django-q2 entry points for alerts (thin; safe to run twice)."""

from __future__ import annotations

from portal.alerts import services


def evaluate_alerts() -> int:
    services.take_sample()
    return len(services.evaluate_all())


def check_audit_chain() -> bool:
    check = services.check_audit_chain()
    return check is not None and check.ok
