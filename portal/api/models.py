from __future__ import annotations

from django.db import models
from django.utils import timezone


class IdempotencyRecord(models.Model):
    """One Idempotency-Key a principal used on one endpoint (IETF draft
    "The Idempotency-Key HTTP Header Field"): the request's fingerprint, whether it is still
    being processed, and what it created. Kept at least API_IDEMPOTENCY_TTL_HOURS."""

    class State(models.TextChoices):
        PROCESSING = "processing"
        DONE = "done"

    id = models.BigAutoField(primary_key=True)
    owner = models.CharField(max_length=64)  # "client:<id>" or "user:<id>"
    endpoint = models.CharField(max_length=100)  # "POST /api/messages"
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)  # SHA-256 of the canonical JSON body
    state = models.CharField(max_length=10, choices=State.choices, default=State.PROCESSING)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    resource_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "endpoint", "key"], name="api_idempotency_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.endpoint} {self.key!r} ({self.state})"
