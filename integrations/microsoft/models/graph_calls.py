"""The Graph call log: one row per HTTP exchange with Graph, and its figures."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import models
from django.db.models import Count, Max, Q
from django.utils import timezone

# A Graph call succeeded when Graph answered 2xx or 3xx. No answer (timeout, reset), any 4xx
# (a 404 that the caller handles included) and 5xx are failures: succeeded + failed = total.
GRAPH_CALL_SUCCEEDED = Q(status__gte=200, status__lt=400)
GRAPH_CALL_FAILED = Q(status__isnull=True) | Q(status__lt=200) | Q(status__gte=400)


@dataclass(frozen=True)
class GraphCallFigures:
    """Graph calls over a window (GraphCallQuerySet.figures)."""

    total: int
    succeeded: int
    throttled: int
    server_errors: int
    no_response: int
    last_call_at: datetime | None
    last_success_at: datetime | None

    @property
    def failed(self) -> int:
        return self.total - self.succeeded

    @property
    def unavailable(self) -> int:
        """Calls Graph failed (5xx) or never answered (timeout, reset): Graph itself is
        failing, as opposed to refusing (4xx) or throttling us (429)."""
        return self.server_errors + self.no_response

    @property
    def unavailable_ratio(self) -> float | None:
        return self.unavailable / self.total if self.total else None

    @property
    def error_ratio(self) -> float | None:
        """failed / total (0..1); None without calls."""
        return self.failed / self.total if self.total else None

    @property
    def success_rate(self) -> float | None:
        """Percent of calls that succeeded, one decimal; None without calls."""
        return round(100.0 * self.succeeded / self.total, 1) if self.total else None


class GraphCallQuerySet(models.QuerySet["GraphCall"]):
    def since(self, moment: datetime) -> GraphCallQuerySet:
        return self.filter(created_at__gte=moment)

    def last_hours(self, hours: float = 1.0) -> GraphCallQuerySet:
        return self.since(timezone.now() - timedelta(hours=hours))

    def last_seconds(self, seconds: float) -> GraphCallQuerySet:
        return self.since(timezone.now() - timedelta(seconds=seconds))

    def succeeded(self) -> GraphCallQuerySet:
        return self.filter(GRAPH_CALL_SUCCEEDED)

    def failed(self) -> GraphCallQuerySet:
        return self.filter(GRAPH_CALL_FAILED)

    def throttled_mailboxes(self) -> list[dict[str, Any]]:
        """429s grouped by mailbox (Graph id; "" for tenant-wide routes), most first."""
        return list(
            self.filter(throttled=True)
            .values("mailbox")
            .annotate(count=Count("id"), last=Max("created_at"))
            .order_by("-count", "mailbox")
        )

    def figures(self) -> GraphCallFigures:
        """Totals over this queryset (bound it in time first: the table is big)."""
        row = self.aggregate(
            total=Count("id"),
            succeeded=Count("id", filter=GRAPH_CALL_SUCCEEDED),
            throttled=Count("id", filter=Q(throttled=True)),
            server_errors=Count("id", filter=Q(status__gte=500)),
            no_response=Count("id", filter=Q(status__isnull=True)),
            last_call_at=Max("created_at"),
            last_success_at=Max("created_at", filter=GRAPH_CALL_SUCCEEDED),
        )
        return GraphCallFigures(**row)


class GraphCall(models.Model):
    """One HTTP exchange with Graph (inner `$batch` responses get a row each, too).

    Written with a single INSERT per call on the hot path; feeds metrics and alerts
    (error rate, 429s per hour). Kept GRAPH_CALL_RETENTION_DAYS (portal.jobs.retention).
    """

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    method = models.CharField(max_length=8)
    # The path with ids replaced, e.g. /users/{id}/mailFolders/{id}/messages/delta.
    route = models.CharField(max_length=300)
    # Null when no response arrived (timeout, reset).
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)
    throttled = models.BooleanField(default=False)
    retry_after = models.FloatField(null=True, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    mailbox = models.CharField(max_length=255, blank=True)
    in_batch = models.BooleanField(default=False)

    objects = GraphCallQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # The console's search finds a call by the request-id Graph answered with.
            models.Index(
                fields=["request_id"], name="ms_graphcall_request_idx", condition=~Q(request_id="")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.route} → {self.status or 'no response'}"
