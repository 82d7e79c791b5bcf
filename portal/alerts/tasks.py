"""django-q2 entry points for alerts (thin; safe to run twice)."""

from __future__ import annotations

from portal.alerts import samples, services


def evaluate_alerts() -> int:
    services.take_sample()
    return len(services.evaluate_all())


def check_audit_chain() -> bool:
    check = services.check_audit_chain()
    return check is not None and check.ok


def downsample_samples() -> int:
    """Schedule entry: fold the charts' minute samples older than a day into 10-minute rows."""
    return samples.downsample()
