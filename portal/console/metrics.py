"""Read-only breakdowns for the Graph pages (the figures themselves are QuerySet methods on
their models, shared with the API, the alerts and /metrics).

Every query here is bounded in time on the indexed GraphCall.created_at: nothing counts a big
table without a time bound, and nothing calls Graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max
from django.utils import timezone

from integrations.graph import throttle
from integrations.microsoft.models import GraphCall


def throttled_by(field: str, hours: float = 1.0, limit: int = 10) -> list[dict[str, Any]]:
    """429s in the window grouped by `route` or `mailbox`, most first."""
    since = timezone.now() - timedelta(hours=hours)
    return list(
        GraphCall.objects.filter(created_at__gte=since, throttled=True)
        .values(field)
        .annotate(count=Count("id"), last=Max("created_at"))
        .order_by("-count", field)[:limit]
    )


@dataclass
class Backoff:
    scope: str
    mailbox: str
    route: str
    until: datetime
    retry_after: float
    this_process_seconds: float

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.until - timezone.now()).total_seconds()))


def backoff_windows(limit: int = 50) -> list[Backoff]:
    """Throttle windows still running, from the 429s every process recorded.

    A 429 with Retry-After at T means Graph asked us to wait until T + Retry-After; the
    per-process gate (`throttle.mailbox_blocked_for`) is shown beside it for this web process.
    """
    now = timezone.now()
    # Retry-After is at most a few minutes in practice; 15 minutes back is plenty.
    recent = (
        GraphCall.objects.filter(created_at__gte=now - timedelta(minutes=15), throttled=True)
        .values("mailbox", "route", "created_at", "retry_after")
        .order_by("-created_at")
    )
    windows: dict[tuple[str, str], Backoff] = {}
    for row in recent[:2000]:
        wait = row["retry_after"] or 0.0
        until = row["created_at"] + timedelta(seconds=wait)
        if until <= now:
            continue
        key = (row["mailbox"], row["route"] if not row["mailbox"] else "")
        if key in windows and windows[key].until >= until:
            continue
        windows[key] = Backoff(
            scope=f"mailbox {row['mailbox']}" if row["mailbox"] else f"route {row['route']}",
            mailbox=row["mailbox"],
            route=row["route"],
            until=until,
            retry_after=wait,
            this_process_seconds=throttle.mailbox_blocked_for(row["mailbox"])
            if row["mailbox"]
            else 0.0,
        )
    return sorted(windows.values(), key=lambda b: b.until, reverse=True)[:limit]


def humanize_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 90 * 60:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
