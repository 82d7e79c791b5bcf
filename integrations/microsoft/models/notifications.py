"""What the notification receiver writes: the inbox (the drain's queue), the per-minute answer
counts and the rejection counter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

from integrations.microsoft.models.subscriptions import MonitoredUser, ResourceKind, Subscription


class NotificationInboxQuerySet(models.QuerySet["NotificationInbox"]):
    """The inbox backlog's figures (the dashboard, /api/metrics/queue, the alert and /metrics
    read these; one definition each)."""

    def pending(self) -> NotificationInboxQuerySet:
        """Accepted, not yet processed: the drain's queue (a partial index keeps it cheap)."""
        return self.filter(status=NotificationInbox.Status.PENDING)

    def oldest_pending_seconds(self) -> float | None:
        """How long the oldest unprocessed notification has waited; None when none waits."""
        # Ids grow with time: the lowest pending id is the oldest (partial index, no scan).
        oldest = self.pending().order_by("id").values_list("received_at", flat=True).first()
        return max(0.0, (timezone.now() - oldest).total_seconds()) if oldest else None


class NotificationInbox(models.Model):
    """One accepted change notification, written by the receiver in the request.

    `dedupe_key` (SHA-256 of subscriptionId | resource id | changeType | etag or time) is
    unique, so Graph's at-least-once redeliveries are absorbed by the INSERT itself. The
    table is the queue: integrations/microsoft/inbox.py drains the pending rows.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        PROCESSED = "processed"
        IGNORED = "ignored"  # its subscription or user is gone

    # Every index below is written by each receiver INSERT (the hot path): only those a
    # query needs, partial where the value starts out NULL, no LIKE (varchar_pattern_ops)
    # twins, and the unique dedupe key as a constraint (ON CONFLICT's arbiter).
    dedupe_key = models.CharField(max_length=64)
    batch = models.CharField(max_length=32, help_text="The request that delivered it")
    subscription = models.ForeignKey(
        Subscription, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    subscription_graph_id = models.CharField(max_length=64)
    monitored_user = models.ForeignKey(
        MonitoredUser, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=ResourceKind.choices)
    change_type = models.CharField(max_length=20)
    resource = models.CharField(max_length=500)
    resource_id = models.CharField(max_length=255, blank=True)
    etag = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    processed_at = models.DateTimeField(null=True, blank=True)
    sync_job = models.ForeignKey(
        "jobs.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="The delta sync it caused",
    )
    # The W3C traceparent of the webhook request that delivered it: the drain continues
    # that trace (portal/lib/tracing.py); "" when tracing is off.
    trace_context = models.CharField(max_length=55, blank=True, default="", db_default="")

    objects = NotificationInboxQuerySet.as_manager()

    class Meta:
        ordering = ["-received_at", "-id"]
        verbose_name_plural = "notification inbox"
        constraints = [
            models.UniqueConstraint(fields=["dedupe_key"], name="inbox_dedupe_key"),
        ]
        indexes = [
            models.Index(fields=["id"], condition=Q(status="pending"), name="inbox_pending"),
            # For SET_NULL when jobs are pruned; the receiver's rows carry none.
            models.Index(
                fields=["sync_job"], condition=Q(sync_job__isnull=False), name="inbox_sync_job"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.change_type} {self.kind} {self.resource_id[:20]} ({self.status})"


class InboxDrainPause(models.Model):
    """The inbox drain's pause switch: while this one row exists, no drain claims anything.

    The receiver keeps accepting notifications (they wait in the inbox, nothing is lost) and
    a resume drains them. Set and cleared only through `inbox.pause()` / `inbox.resume()`,
    which check the permission and audit it."""

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON, editable=False)
    paused_at = models.DateTimeField(default=timezone.now)
    paused_by = models.CharField(max_length=150)
    reason = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="inbox_drain_pause_single_row"),
        ]

    def __str__(self) -> str:
        return f"Inbox drain paused by {self.paused_by}"


# Graph judges an endpoint by the answers of the last 10 minutes ("Receive change
# notifications through webhooks", throttling).
ANSWER_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True)
class AnswerFigures:
    """Notification requests answered in the last ANSWER_WINDOW, and how many were slow."""

    answered: int
    slow: int

    @property
    def slow_percent(self) -> float | None:
        """Percent of answers slower than NOTIFICATION_SLOW_ANSWER_SECONDS; None without any."""
        return round(100.0 * self.slow / self.answered, 2) if self.answered else None


class NotificationAnswerQuerySet(models.QuerySet["NotificationAnswers"]):
    def figures(self) -> AnswerFigures:
        """The answers of the last 10 minutes (whole minutes: the current one and nine)."""
        since = timezone.now().replace(second=0, microsecond=0) - ANSWER_WINDOW
        row = self.filter(minute__gt=since).aggregate(
            answered=models.Sum("answered"), slow=models.Sum("slow")
        )
        return AnswerFigures(row["answered"] or 0, row["slow"] or 0)


class NotificationAnswers(models.Model):
    """How many notification requests the receiver answered in one minute, and how many of
    those answers were slow: one row per minute, counted up by the receiver."""

    minute = models.DateTimeField(primary_key=True)
    answered = models.PositiveIntegerField(default=0)
    slow = models.PositiveIntegerField(default=0)

    objects = NotificationAnswerQuerySet.as_manager()

    class Meta:
        ordering = ["-minute"]
        verbose_name_plural = "notification answers"

    def __str__(self) -> str:
        return f"{self.minute:%H:%M}: {self.slow} of {self.answered} slow"


class WebhookRejection(models.Model):
    """Security counter: notifications refused for an unknown subscription or a wrong
    clientState, per endpoint, reason and day (one row, counted up)."""

    class Reason(models.TextChoices):
        UNKNOWN_SUBSCRIPTION = "unknown_subscription", "Unknown subscription"
        CLIENT_STATE_MISMATCH = "client_state_mismatch", "Wrong clientState"

    day = models.DateField()
    endpoint = models.CharField(max_length=20)
    reason = models.CharField(max_length=30, choices=Reason.choices)
    count = models.PositiveIntegerField(default=0)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    last_subscription_id = models.CharField(max_length=64, blank=True)
    last_remote_addr = models.CharField(max_length=45, blank=True)

    class Meta:
        ordering = ["-day", "endpoint", "reason"]
        constraints = [
            models.UniqueConstraint(
                fields=["day", "endpoint", "reason"], name="ms_webhook_rejection_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.endpoint} {self.reason}: {self.count}"
