"""Scheduled entry points (django-q2 schedules call these by dotted path)."""

from __future__ import annotations


def fan_out() -> int:
    from portal.events.push import fan_out as fan_out_all

    return fan_out_all()
