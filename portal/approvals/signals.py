"""Sent after a break-glass run and after its review; portal.alerts re-evaluates its rule."""

from django.dispatch import Signal

break_glass_changed = Signal()
