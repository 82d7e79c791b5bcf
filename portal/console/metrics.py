"""Read-only figures for the dashboard and the Graph pages.

Every query here is bounded in time on an indexed column (GraphCall.created_at,
Subscription.expiration) or runs over small tables (credentials, sync states): nothing counts
a big table without a time bound, and nothing calls Graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Max, Min, Q, Sum
from django.utils import timezone

from integrations.microsoft import throttle
from integrations.microsoft.models import Credential, GraphCall, Subscription, SyncState
from portal.alerts.models import MetricSample

# A Graph call is a success when Graph answered below 400 (404 of a delete is still handled
# by the caller, but it is not a success of the integration).
SUCCESS_Q = Q(status__lt=400, status__isnull=False)


@dataclass
class GraphWindow:
    since: datetime
    total: int
    succeeded: int
    throttled: int
    server_errors: int
    no_response: int
    last_call_at: datetime | None
    last_success_at: datetime | None

    @property
    def success_rate(self) -> float | None:
        """Percent of calls that succeeded; None without calls."""
        return round(100.0 * self.succeeded / self.total, 1) if self.total else None

    @property
    def failed(self) -> int:
        return self.total - self.succeeded


def graph_window(hours: float = 1.0) -> GraphWindow:
    since = timezone.now() - timedelta(hours=hours)
    row = GraphCall.objects.filter(created_at__gte=since).aggregate(
        total=Count("id"),
        succeeded=Count("id", filter=SUCCESS_Q),
        throttled=Count("id", filter=Q(throttled=True)),
        server_errors=Count("id", filter=Q(status__gte=500)),
        no_response=Count("id", filter=Q(status__isnull=True)),
        last_call_at=Max("created_at"),
        last_success_at=Max("created_at", filter=SUCCESS_Q),
    )
    return GraphWindow(since=since, **row)


def graph_day_from_samples() -> GraphWindow:
    """The last 24 hours from the per-minute samples (1,440 rows), not from millions of calls.

    Used where only totals are shown; the samples start when the worker starts sampling.
    """

    since = timezone.now() - timedelta(hours=24)
    row = MetricSample.objects.filter(taken_at__gte=since).aggregate(
        ok=Sum("calls_ok"), failed=Sum("calls_failed"), throttled=Sum("calls_throttled")
    )
    ok, failed = row["ok"] or 0, row["failed"] or 0
    return GraphWindow(
        since=since,
        total=ok + failed,
        succeeded=ok,
        throttled=row["throttled"] or 0,
        server_errors=0,
        no_response=0,
        last_call_at=None,
        last_success_at=None,
    )


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


def credential_expiry() -> dict[str, Any]:
    """The active secret's expiry: days left (None when unknown), for the dashboard tile."""
    active = (
        Credential.objects.filter(state=Credential.State.ACTIVE)
        .only(
            "id",
            "display_name",
            "fingerprint",
            "expires_at",
            "last_verified_at",
            "last_error",
            "tenant_id",
            "client_id",
        )
        .first()
    )
    if active is None:
        return {"active": None, "days_left": None}
    days = None
    if active.expires_at is not None:
        days = (active.expires_at - timezone.now()).days
    return {"active": active, "days_left": days}


def subscriptions_expiring(hours: int = 24) -> int:
    now = timezone.now()
    return Subscription.objects.filter(
        state=Subscription.State.ACTIVE, expiration__lt=now + timedelta(hours=hours)
    ).count()


def sync_lag() -> dict[str, Any]:
    """How far behind delta sync is: the oldest last success among active users' states."""
    states = SyncState.objects.filter(monitored_user__is_active=True)
    row = states.aggregate(
        oldest_success=Min("last_success_at"),
        failed=Count("id", filter=Q(status=SyncState.Status.FAILED)),
        never=Count("id", filter=Q(last_success_at__isnull=True)),
        due=Count("id", filter=Q(due_since__isnull=False)),
        total=Count("id"),
    )
    lag = None
    if row["oldest_success"] is not None:
        lag = int((timezone.now() - row["oldest_success"]).total_seconds())
    return {**row, "lag_seconds": lag}


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
