"""django-q2 entry points for the audit log (thin; safe to run twice)."""

from __future__ import annotations

from portal.audit import stream


def ship_audit_stream() -> int:
    """Schedule entry: ship new audit events and checkpoints to every configured sink."""
    return stream.ship_all()


def ship_audit_sink(sink: str) -> int:
    """Ship what waits for one sink (its URL as configured), e.g. right after it recovered."""
    return stream.ship_sink(sink)
