from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import models
from django.utils import timezone

# Audited actions that change nothing (signing in, reading, checking, exporting): not
# "operator actions" on the dashboard's charts.
NOT_CHANGES_PREFIXES = ("auth.", "audit.", "preference.")
NOT_CHANGES = frozenset(
    {
        "access.view",
        "api.call",
        "approval.secret_shown",
        "credential.verify",
        "integration.verify",
        "sync.diagnose",
        "webhooks.compare",
    }
)


class AuditEventQuerySet(models.QuerySet["AuditEvent"]):
    def operator_actions(self, start: datetime, end: datetime) -> AuditEventQuerySet:
        """What people did to the system in [start, end): successful state-changing actions
        by a person (console) or a person's API token, oldest first. The dashboard's charts
        mark them, so a change in a figure can be read beside the action that caused or
        fixed it."""
        reads = models.Q(action__in=NOT_CHANGES)
        for prefix in NOT_CHANGES_PREFIXES:
            reads |= models.Q(action__startswith=prefix)
        return (
            self.filter(
                created_at__gte=start,
                created_at__lt=end,
                actor_type__in=("user", "token"),
                outcome=AuditEvent.Outcome.SUCCESS,
            )
            .exclude(reads)
            .order_by("created_at", "id")
        )


class AuditEvent(models.Model):
    """One operator or system action. Append-only and hash-chained (see portal/audit/chain.py).

    There are no foreign keys on purpose: deleting or renaming a user must never rewrite
    history, and on PostgreSQL a trigger refuses UPDATE and DELETE on this table.
    """

    class Outcome(models.TextChoices):
        SUCCESS = "success"
        FAILURE = "failure"
        DENIED = "denied"

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=64, blank=True)
    actor_name = models.CharField(max_length=150, db_index=True)
    actor_role = models.CharField(max_length=32, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=255, blank=True)
    params = models.JSONField(default=dict, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    reason = models.TextField(blank=True)
    ip = models.CharField(max_length=45, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    # Which AUDIT_CHAIN_KEY entry signed this row ("sha256-legacy": before the chain was keyed).
    key_id = models.CharField(max_length=32)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"], name="audit_target_idx"),
            # The console's search finds every audited object by its id alone.
            models.Index(fields=["target_id"], name="audit_target_id_idx"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} by {self.actor_name} ({self.outcome})"


class AuditCheckpoint(models.Model):
    """What a passing verification saw: the newest event, its hash and how many there were.

    A later verification that finds fewer events, or another hash at this event, reports the
    chain broken: that is how deleting the newest rows or truncating the table is caught.
    `mac` (HMAC under the chain key) stops anyone without the key from writing a checkpoint
    that fits a rewritten log. Checkpoints chain too (version 2): each signs its number `seq`
    and the previous checkpoint's id and MAC, so one deleted from the middle breaks the next,
    and the copy outside the database (AUDIT_CHECKPOINT_FILE, the audit stream) shows the
    newest ones deleted. Version 1 rows (from before the checkpoint chain) sign neither.
    Append-only like the events (PostgreSQL triggers).
    """

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField()
    event_id = models.BigIntegerField(null=True, blank=True)
    event_hash = models.CharField(max_length=64)
    event_count = models.PositiveBigIntegerField()
    source = models.CharField(max_length=64, blank=True)
    key_id = models.CharField(max_length=32)
    mac = models.CharField(max_length=64)
    # 1 is the default so that migration 0003, which writes an unchained one, stays as it was.
    version = models.PositiveSmallIntegerField(default=1)
    seq = models.PositiveBigIntegerField(null=True, blank=True)
    prev_checkpoint_id = models.BigIntegerField(null=True, blank=True)
    prev_mac = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"checkpoint #{self.pk}: {self.event_count} events up to #{self.event_id}"


PENDING_COUNT_CAP = 100_000


@dataclass(frozen=True)
class StreamLag:
    sink: str
    pending: int  # events (at most PENDING_COUNT_CAP) and checkpoints not yet shipped
    lag_seconds: float  # age of the oldest of them (0: nothing waits)
    shipped_at: datetime | None
    last_error: str


class AuditStreamCursorQuerySet(models.QuerySet["AuditStreamCursor"]):
    def lags(self, sinks: list[str]) -> list[StreamLag]:
        """How far behind each named sink is: the one figure the dashboard, /metrics and the
        alert show. A sink that never shipped is behind by the whole log."""
        cursors = {cursor.sink: cursor for cursor in self.filter(sink__in=sinks)}
        now = timezone.now()
        lags = []
        for sink in sinks:
            cursor = cursors.get(sink) or AuditStreamCursor(sink=sink)
            events = AuditEvent.objects.filter(pk__gt=cursor.last_event_id)
            checkpoints = AuditCheckpoint.objects.filter(pk__gt=cursor.last_checkpoint_id)
            oldest = [
                first
                for first in (
                    events.order_by("id").values_list("created_at", flat=True).first(),
                    checkpoints.order_by("id").values_list("created_at", flat=True).first(),
                )
                if first is not None
            ]
            lags.append(
                StreamLag(
                    sink=sink,
                    # Counted up to a cap: a sink far behind must not make every scrape count
                    # the whole table.
                    pending=events[:PENDING_COUNT_CAP].count() + checkpoints.count(),
                    lag_seconds=max(0.0, (now - min(oldest)).total_seconds()) if oldest else 0.0,
                    shipped_at=cursor.shipped_at,
                    last_error=cursor.last_error,
                )
            )
        return lags


class AuditStreamCursor(models.Model):
    """How far the audit stream has shipped to one sink (portal/audit/stream.py).

    The events and checkpoints themselves are the buffer: they are never deleted, so a sink
    that is down for days resumes here and loses nothing. `lease_*` lets one worker ship to a
    sink at a time (a second run of the schedule skips a sink that is being shipped to).
    """

    sink = models.CharField(max_length=300, unique=True)
    last_event_id = models.BigIntegerField(default=0)
    last_checkpoint_id = models.BigIntegerField(default=0)
    shipped_total = models.PositiveBigIntegerField(default=0)
    shipped_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    lease_token = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    objects = AuditStreamCursorQuerySet.as_manager()

    def __str__(self) -> str:
        return f"audit stream to {self.sink}: event #{self.last_event_id}"
