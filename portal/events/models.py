from __future__ import annotations

from django.db import models
from django.db.models import Q, Sum
from django.utils import timezone


class Event(models.Model):
    """A fact the portal learned (a mail arrived, a message was sent…), for the Fleet side.

    Append-only: rows are never changed or deleted except by retention pruning. The id is the
    feed's cursor: appends are serialised until commit (services.emit), so ids become
    visible in increasing order and a reader that remembers the last id misses nothing.
    """

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=40)
    occurred_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    # What the event is about, for filtering and grouping (e.g. the monitored user's id).
    subject = models.CharField(max_length=255, blank=True)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["type", "id"], name="event_type_id_idx"),
            models.Index(fields=["created_at"], name="event_created_idx"),  # retention
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.type}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None and not self._state.adding:
            raise ValueError("Events are append-only.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class EventEndpointQuerySet(models.QuerySet["EventEndpoint"]):
    """The endpoint figures the dashboard, the API, the alerts and /metrics show (one
    definition each)."""

    def failing(self) -> EventEndpointQuerySet:
        """Disabled (by failures or a 410), or active with a delivery failing right now."""
        return self.filter(
            Q(state=EventEndpoint.State.DISABLED)
            | Q(state=EventEndpoint.State.ACTIVE, failing_since__isnull=False)
        )

    def backlog(self) -> int:
        """Events waiting for delivery, summed over these endpoints leaving out paused ones
        (a person paused them: their backlog is on purpose)."""
        return sum(
            endpoint.backlog() for endpoint in self.exclude(state=EventEndpoint.State.PAUSED)
        )


class EventEndpoint(models.Model):
    """A URL the Fleet side receives events at, signed per Standard Webhooks.

    `cursor` is the last event id handed to a delivery: events after it are the backlog. A
    paused or disabled endpoint keeps its cursor, so nothing is lost and it can catch up.
    """

    class State(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"  # by a person; deliveries wait
        DISABLED = "disabled"  # 410 Gone, or failing for too long; an admin re-enables

    id = models.BigAutoField(primary_key=True)
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=300, blank=True)
    event_types = models.JSONField(default=list, blank=True)  # empty: every type
    state = models.CharField(max_length=10, choices=State.choices, default=State.ACTIVE)
    state_reason = models.CharField(max_length=300, blank=True)
    secret_encrypted = models.TextField(editable=False)
    # During a rotation deliveries carry a signature with each secret until this time.
    previous_secret_encrypted = models.TextField(blank=True, editable=False)
    previous_secret_until = models.DateTimeField(null=True, blank=True)
    cursor = models.BigIntegerField(default=0)
    failing_since = models.DateTimeField(null=True, blank=True)
    failure_streak = models.PositiveIntegerField(default=0)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_failure_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)
    # Who owns it: the service client that made it through the API, or (null) the console,
    # for endpoints people made. A client sees and acts on its own endpoints only
    # (endpoints.visible_endpoints); people see them all. PROTECT: clients are revoked, not deleted.
    owner_client = models.ForeignKey(
        "access.ServiceClient",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="event_endpoints",
    )

    objects = EventEndpointQuerySet.as_manager()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.url} ({self.state})"

    @property
    def owner_label(self) -> str:
        """ "console", or the owning client as created_by fields name it (client:<name>)."""
        return self.owner_client.actor_name if self.owner_client is not None else "console"

    def wants(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types

    def backlog(self) -> int:
        """Events waiting for this endpoint: after its cursor (of the types it wants), plus
        those in its deliveries not yet delivered."""
        after = Event.objects.filter(pk__gt=self.cursor)
        if self.event_types:
            after = after.filter(type__in=self.event_types)
        waiting = EventDelivery.objects.filter(
            endpoint=self,
            is_test=False,
            status__in=[EventDelivery.Status.PENDING, EventDelivery.Status.HELD],
        ).aggregate(n=Sum("event_count"))["n"]
        return after.count() + (waiting or 0)


class EventDelivery(models.Model):
    """One signed POST of a batch of events to one endpoint, retried by its job.

    The body and `webhook_id` are fixed when the delivery is made, so every attempt (and a
    replay) carries the same webhook-id and the receiver can drop duplicates.
    """

    class Status(models.TextChoices):
        PENDING = "pending"  # waiting for its (next) attempt
        DELIVERED = "delivered"
        HELD = "held"  # its endpoint is paused or disabled; sent again on resume
        FAILED = "failed"  # out of attempts, or the endpoint answered 410

    id = models.BigAutoField(primary_key=True)
    # No index of its own: (endpoint, status, id) below serves every lookup by endpoint, and
    # each index is one more entry to write on every delivery's status change.
    endpoint = models.ForeignKey(
        EventEndpoint, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    # Unique through a constraint, not `unique=True`: on PostgreSQL that would add a second,
    # LIKE-ready index that no query uses, one more entry on every status change.
    webhook_id = models.CharField(max_length=64)
    first_event_id = models.BigIntegerField()
    last_event_id = models.BigIntegerField()
    event_count = models.PositiveIntegerField()
    body = models.TextField()
    is_test = models.BooleanField(default=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_response_excerpt = models.CharField(max_length=500, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while an attempt is in flight: it holds one of its endpoint's and owner's
    # concurrency slots until then (delivery.take_slot), so a worker that died frees it anyway.
    sending_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["endpoint", "status", "id"], name="event_delivery_state_idx"),
            models.Index(fields=["created_at"], name="event_delivery_created_idx"),  # retention
            # Only the deliveries in flight: the slot counts read a handful of entries.
            models.Index(
                fields=["endpoint", "sending_until"],
                name="event_delivery_in_flight_idx",
                condition=Q(sending_until__isnull=False),
            ),
        ]
        constraints = [
            models.UniqueConstraint(fields=["webhook_id"], name="event_delivery_webhook_id_uniq")
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} → endpoint {self.endpoint_id} ({self.status})"
