"""The approval policy (which actions need a second person) and the approval requests."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApprovalPolicy(models.Model):
    """The policy saved on the console's Approvals policy page (one row, pk 1).

    APPROVAL_REQUIRED_FOR in the environment, when set, takes its place (see gate.policy()).
    No row: nothing is covered, so a lone on-call engineer is never blocked by surprise.
    """

    actions = models.JSONField(default=list, blank=True)
    bulk_threshold = models.PositiveIntegerField(default=100)
    updated_by = models.CharField(max_length=150, blank=True)
    updated_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"approval policy: {', '.join(self.actions) or 'nothing covered'}"


def _pending() -> models.Q:
    return models.Q(status=ApprovalRequest.Status.PENDING, expires_at__gt=timezone.now())


_UNREVIEWED_BREAK_GLASS = models.Q(break_glass=True, reviewed_at__isnull=True)


class ApprovalRequestQuerySet(models.QuerySet):
    def pending(self) -> ApprovalRequestQuerySet:
        """Waiting for a decision and not expired: the badge, the API and /metrics count these."""
        return self.filter(_pending())

    def unreviewed_break_glass(self) -> ApprovalRequestQuerySet:
        """Covered actions run without approval that nobody has reviewed yet."""
        return self.filter(_UNREVIEWED_BREAK_GLASS)

    def figures(self) -> dict[str, int]:
        """Both counts above in one query (for /metrics)."""
        return self.aggregate(
            pending=models.Count("id", filter=_pending()),
            break_glass_unreviewed=models.Count("id", filter=_UNREVIEWED_BREAK_GLASS),
        )


class ApprovalRequest(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Waiting for approval"
        APPROVED = "approved", "Approved, waiting for its requester to run it"
        REJECTED = "rejected", "Rejected"
        WITHDRAWN = "withdrawn", "Withdrawn"
        EXPIRED = "expired", "Expired"
        RUNNING = "running", "Running"
        EXECUTED = "executed", "Done"
        FAILED = "failed", "Failed"

    class EntryPoint(models.TextChoices):
        CONSOLE = "console", "Console"
        API = "api", "API"
        COMMAND = "command", "Management command"
        ADMIN = "admin", "Django admin"

    action = models.CharField(max_length=64, db_index=True)
    params = models.JSONField(default=dict, blank=True)
    # What the console's preview showed when the request was filed (counts, what changes).
    preview = models.JSONField(default=dict, blank=True)
    summary = models.CharField(max_length=300)
    reason = models.TextField()
    status = models.CharField(
        max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    entry_point = models.CharField(max_length=16, choices=EntryPoint.choices)
    requester = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    requester_name = models.CharField(max_length=150)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    decided_by_name = models.CharField(max_length=150, blank=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_comment = models.TextField(blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    # Ids of what the run made (e.g. {"operation_id": 7}) and its outcome in words.
    result = models.JSONField(default=dict, blank=True)
    # A secret the run made for the requester (a token, a password), encrypted
    # (FIELD_ENCRYPTION_KEYS) until the requester has seen it once, then erased.
    secret_encrypted = models.TextField(blank=True, editable=False)
    error = models.TextField(blank=True)
    break_glass = models.BooleanField(default=False)
    reviewed_by_name = models.CharField(max_length=150, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_comment = models.TextField(blank=True)

    objects = ApprovalRequestQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["break_glass", "reviewed_at"], name="approval_break_glass_idx")
        ]

    def __str__(self) -> str:
        return f"approval #{self.pk} {self.action} ({self.status})"

    @property
    def is_expired(self) -> bool:
        return self.status == self.Status.PENDING and self.expires_at <= timezone.now()

    @property
    def shown_status(self) -> str:
        """The status as people see it: a pending request past its time has expired."""
        return self.Status.EXPIRED.label if self.is_expired else self.get_status_display()

    @property
    def correlation_id(self) -> str:
        """The request id of every audit event its run writes (the audit log groups them)."""
        return f"approval-{self.pk}"

    @staticmethod
    def expiry_from(now: datetime) -> datetime:
        return now + timedelta(minutes=settings.APPROVAL_EXPIRY_MINUTES)
