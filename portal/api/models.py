from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.access.token_values import hash_token, new_token_value

TOKEN_PREFIX = "fgp_"
__all__ = ["TOKEN_PREFIX", "ApiToken", "hash_token", "new_token_value"]


def public_prefix(raw: str) -> str | None:
    """The visible `fgp_xxxxxxxx` part of a value shaped like one of our tokens, else None."""
    head, sep, _ = raw[len(TOKEN_PREFIX) :].partition("_")
    if not raw.startswith(TOKEN_PREFIX) or not sep or len(head) != 8:
        return None
    if any(char not in "0123456789abcdef" for char in head):
        return None
    return f"{TOKEN_PREFIX}{head}"


class ApiToken(models.Model):
    """A bearer token for machine clients. Only its SHA-256 is stored."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True)
    token_hash = models.CharField(max_length=64, unique=True)
    # Permission codenames; empty means "whatever the user's role allows".
    scopes = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=150)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def display_name(self) -> str:
        return f"token:{self.prefix}:{self.user.get_username()}"

    @property
    def is_usable(self) -> bool:
        now = timezone.now()
        return (
            self.revoked_at is None
            and (self.expires_at is None or self.expires_at > now)
            and self.user.is_active
        )

    def allows(self, codename: str) -> bool:
        return not self.scopes or codename in self.scopes


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
