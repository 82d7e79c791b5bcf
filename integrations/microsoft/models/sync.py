"""Delta-sync state per monitored user and resource kind, its runs and the synced items.
Fields the workers own are edited only by the sync engine."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import models
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from integrations.microsoft.models.subscriptions import MonitoredUser, ResourceKind


def _with_lag(row: dict[str, Any]) -> dict[str, Any]:
    oldest = row["oldest_success"]
    lag = int((timezone.now() - oldest).total_seconds()) if oldest else None
    return {**row, "lag_seconds": lag}


class SyncStateQuerySet(models.QuerySet["SyncState"]):
    def monitored(self) -> SyncStateQuerySet:
        return self.filter(monitored_user__is_active=True)

    def health(self) -> dict[str, Any]:
        """SYNC_HEALTH over the monitored users' states, with `lag_seconds`."""
        return _with_lag(self.monitored().aggregate(**SYNC_HEALTH))

    def health_by_kind(self) -> dict[str, dict[str, Any]]:
        """The same figures per resource kind."""
        rows = self.monitored().values("kind").annotate(**SYNC_HEALTH).order_by("kind")
        return {row.pop("kind"): _with_lag(row) for row in rows}


class SyncState(models.Model):
    """Delta-sync state of one monitored user and resource kind.

    `delta_link` is the last completed round's link; `next_link` is the in-round checkpoint
    (the next page to fetch) so a crash resumes mid-round. `lease_*` is the claim that keeps
    two workers from running the same user-and-kind at once.
    """

    class Status(models.TextChoices):
        NEVER = "never", "Never synced"
        IDLE = "idle", "Idle"
        RUNNING = "running", "Running"
        FAILED = "failed", "Failed"

    class RoundKind(models.TextChoices):
        DELTA = "delta", "Delta"
        FULL = "full", "Full (initial)"
        AUTO_RESET = "auto_reset", "Automatic reset (token expired)"
        MANUAL_RESET = "manual_reset", "Manual reset"

    monitored_user = models.ForeignKey(
        MonitoredUser, on_delete=models.CASCADE, related_name="sync_states"
    )
    kind = models.CharField(max_length=20, choices=ResourceKind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.NEVER)
    delta_link = models.TextField(blank=True)
    next_link = models.TextField(blank=True)
    round_kind = models.CharField(max_length=16, choices=RoundKind.choices, blank=True)
    round_number = models.PositiveIntegerField(default=0)
    round_started_at = models.DateTimeField(null=True, blank=True)
    # A full round is wanted next (manual reset); consumed when that round starts.
    reset_requested = models.BooleanField(default=False)
    token_obtained_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # Set when a notification arrives with real-time sync off: the interval run is due.
    due_since = models.DateTimeField(null=True, blank=True)
    item_count = models.PositiveIntegerField(default=0)
    total_added = models.PositiveBigIntegerField(default=0)
    total_updated = models.PositiveBigIntegerField(default=0)
    total_removed = models.PositiveBigIntegerField(default=0)
    queued_job_id = models.BigIntegerField(
        null=True, blank=True, help_text="The pending delta job (coalescing)"
    )
    lease_owner = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    objects = SyncStateQuerySet.as_manager()

    class Meta:
        ordering = ["monitored_user_id", "kind"]
        constraints = [
            models.UniqueConstraint(fields=["monitored_user", "kind"], name="ms_sync_state_unique")
        ]

    def __str__(self) -> str:
        return f"{self.monitored_user} {self.kind} ({self.status})"

    @property
    def token_age(self) -> timedelta | None:
        return timezone.now() - self.token_obtained_at if self.token_obtained_at else None


# Sync health over the states of monitored (active) users. "Never synced" means no run has
# succeeded yet, whatever the last attempt did; the lag is the age of the oldest last success.
SYNC_HEALTH = {
    "states": Count("id"),
    "failed": Count("id", filter=Q(status=SyncState.Status.FAILED)),
    "never": Count("id", filter=Q(last_success_at__isnull=True)),
    "due": Count("id", filter=Q(due_since__isnull=False)),
    "oldest_success": Min("last_success_at"),
    "newest_success": Max("last_success_at"),
    "oldest_token": Min("token_obtained_at"),
}


class SyncRun(models.Model):
    """One run of the sync engine over one user-and-kind (a round may span several runs)."""

    class Outcome(models.TextChoices):
        RUNNING = "running"
        SUCCEEDED = "succeeded"  # the round completed: a new delta link is stored
        CONTINUED = "continued"  # page budget used; a follow-up job continues the round
        RESET = "reset"  # the token expired; a full round follows (auto_reset run)
        FAILED = "failed"

    state = models.ForeignKey(SyncState, on_delete=models.CASCADE, related_name="runs")
    kind = models.CharField(max_length=16, choices=SyncState.RoundKind.choices)
    resumed = models.BooleanField(default=False, help_text="Started from a checkpoint")
    trigger = models.CharField(max_length=40, blank=True)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    pages = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    removed = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} run of {self.state} ({self.outcome})"


class SyncedItem(models.Model):
    """A message or chat message as last seen by delta sync (a trimmed copy, no bodies)."""

    monitored_user = models.ForeignKey(MonitoredUser, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=20, choices=ResourceKind.choices)
    graph_id = models.CharField(max_length=255)
    summary = models.CharField(max_length=255, blank=True)
    item_at = models.DateTimeField(
        null=True, blank=True, help_text="receivedDateTime / createdDateTime"
    )
    data = models.JSONField(default=dict, blank=True)
    seen_round = models.PositiveIntegerField(default=0)
    first_seen_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-item_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["monitored_user", "kind", "graph_id"], name="ms_synced_item_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.summary[:40] or self.graph_id[:20]}"
