"""Is a worker alive? The age of the latest heartbeat, and a ping task that the first free
worker answers (is one taking tasks right now?)."""

from __future__ import annotations

import os
import secrets
import socket
import time
from datetime import timedelta

from django.utils import timezone
from django_q.tasks import async_task

from portal.jobs.models import WorkerHeartbeat, WorkerPing

# A worker whose latest heartbeat is older than this is reported stale.
WORKER_STALE_AFTER = timedelta(minutes=3)


def worker_heartbeat_age() -> float | None:
    """Seconds since any worker last reported; None when none ever did."""
    latest = (
        WorkerHeartbeat.objects.order_by("-last_seen").values_list("last_seen", flat=True).first()
    )
    return (timezone.now() - latest).total_seconds() if latest else None


def ping_workers(timeout: float) -> tuple[str, float] | None:
    """Queue a ping and wait up to `timeout` seconds for a worker to answer it. Returns who
    answered and after how many seconds, or None. Must run outside a transaction: a worker
    cannot see the ping before it commits."""
    ping = WorkerPing.objects.create(nonce=secrets.token_hex(16))
    started = time.monotonic()
    async_task("portal.jobs.tasks.answer_ping", ping.pk, task_name=f"ping-{ping.nonce[:8]}")
    deadline = started + timeout
    while True:
        ping.refresh_from_db(fields=["answered_at", "answered_by"])
        if ping.answered_at is not None:
            return ping.answered_by or "a worker", time.monotonic() - started
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.2)


def answer_ping(ping_id: int) -> bool:
    """Answer a ping (safe to run twice: only the first run answers). Returns whether it did."""
    return bool(
        WorkerPing.objects.filter(pk=ping_id, answered_at__isnull=True).update(
            answered_at=timezone.now(), answered_by=f"{socket.gethostname()}:{os.getpid()}"[:200]
        )
    )
