"""Scheduled entry points (django-q2 schedules call these by dotted path)."""

from __future__ import annotations

from portal.events.fan_out import fan_out as fan_out_all


def fan_out() -> int:
    return fan_out_all()
