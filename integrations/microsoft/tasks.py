"""Thin django-q2 entry points: take ids, call a service. Safe to run twice."""

from __future__ import annotations

import os
import socket

from django.utils import timezone

from integrations.microsoft.credentials import retire_expired_grace as retire
from integrations.microsoft.models import WorkerPing


def answer_ping(ping_id: int) -> bool:
    """verify_integration's worker-alive probe. Returns whether this run answered it."""

    return bool(
        WorkerPing.objects.filter(pk=ping_id, answered_at__isnull=True).update(
            answered_at=timezone.now(), answered_by=f"{socket.gethostname()}:{os.getpid()}"[:200]
        )
    )


def retire_expired_grace() -> int:
    """Schedule entry: retire credentials whose grace period is over."""

    return retire()
