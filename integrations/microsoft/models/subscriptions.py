"""Monitored users, their change-notification subscriptions and the lifecycle events Graph
sends about those subscriptions. Fields the workers own are edited only by the services."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.db import models
from django.db.models import Count, Min, Q
from django.db.models.functions import Lower
from django.utils import timezone

from integrations.graph import kinds
from portal.lib.crypto import decrypt


class ResourceKind(models.TextChoices):
    # The values are the Graph client's kind names (its KINDS table is keyed by them).
    MESSAGES = kinds.MESSAGES, "Outlook inbox messages"
    CHAT_MESSAGES = kinds.CHAT_MESSAGES, "Teams chat messages"


class MonitoredUserQuerySet(models.QuerySet["MonitoredUser"]):
    def lookup(self, identifier: str) -> MonitoredUser | None:
        """The monitored user known by this UPN, identifier or Graph id (case-insensitive),
        as the runbook's API, the console and the commands accept them."""
        identifier = identifier.strip()
        if not identifier:
            return None
        return self.filter(
            Q(upn__iexact=identifier)
            | Q(identifier__iexact=identifier)
            | Q(graph_id__iexact=identifier)
        ).first()

    def upns_by_graph_id(self, graph_ids: Iterable[str]) -> dict[str, str]:
        """{graph id (lower case, as GraphCall.mailbox stores it): UPN}, in one query, for
        the monitored users among `graph_ids` that have a UPN."""
        wanted = {gid.lower() for gid in graph_ids if gid}
        if not wanted:
            return {}
        rows = (
            self.annotate(gid=Lower("graph_id"))
            .filter(gid__in=wanted)
            .exclude(upn="")
            .values_list("gid", "upn")
        )
        return dict(rows)


class MonitoredUser(models.Model):
    """A user whose inbox and/or chats the portal keeps subscriptions and delta state for.

    Added by UPN or Graph id (`identifier`); the Graph object id is resolved with
    GET /users/{identifier} and stored, because resource paths should use ids, not UPNs
    (Graph names users by id in notifications).
    """

    identifier = models.CharField(
        max_length=255, unique=True, help_text="UPN or Graph user id, as entered"
    )
    graph_id = models.CharField(
        "Graph user id", max_length=64, blank=True, db_index=True, editable=False
    )
    upn = models.CharField("user principal name", max_length=255, blank=True, editable=False)
    display_name = models.CharField(max_length=255, blank=True, editable=False)
    watch_messages = models.BooleanField(
        "messages", default=True, help_text="Outlook inbox messages"
    )
    watch_chat_messages = models.BooleanField(
        "chatMessages", default=True, help_text="Teams chats (getAllMessages)"
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.CharField(max_length=150, blank=True, editable=False)
    resolved_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)

    objects = MonitoredUserQuerySet.as_manager()

    class Meta:
        ordering = ["identifier"]

    def __str__(self) -> str:
        return self.upn or self.identifier

    @property
    def kinds(self) -> list[str]:
        out = []
        if self.watch_messages:
            out.append(ResourceKind.MESSAGES.value)
        if self.watch_chat_messages:
            out.append(ResourceKind.CHAT_MESSAGES.value)
        return out


class SubscriptionQuerySet(models.QuerySet["Subscription"]):
    def counts_by_state(self) -> dict[str, int]:
        """{state: n} for the states that have subscriptions."""
        return dict(self.values_list("state").annotate(n=Count("id")).order_by())

    def active(self) -> SubscriptionQuerySet:
        return self.filter(state=Subscription.State.ACTIVE)

    def expiring_within(self, within: timedelta) -> SubscriptionQuerySet:
        """Active subscriptions whose expiry is less than `within` away (or past)."""
        return self.active().filter(expiration__lt=timezone.now() + within)

    def soonest_expiry_in(self) -> timedelta | None:
        """Time until the soonest active expiry (negative: lapsed); None without any."""
        soonest = self.active().aggregate(soonest=Min("expiration"))["soonest"]
        return soonest - timezone.now() if soonest else None

    def missing(self) -> SubscriptionQuerySet:
        """Gone from Graph (lapsed, removed, or not in Graph's list) and not replaced yet:
        notifications for its user and resource are not arriving. A replaced row is history,
        not missing."""
        return self.filter(state=Subscription.State.REMOVED, replaced_by__isnull=True).exclude(
            monitored_user__is_active=False
        )

    def missing_longer_than(self, bound: timedelta) -> SubscriptionQuerySet:
        """Missing for longer than `bound` (automatic recreation has not fixed it)."""
        return self.missing().filter(missing_since__lte=timezone.now() - bound)

    def missing_figures(self) -> tuple[int, float | None]:
        """(how many are missing, how long the longest-missing one has been missing in
        seconds; None when none is), in one query."""
        row = self.missing().aggregate(n=Count("id"), since=Min("missing_since"))
        since = row["since"]
        return row["n"], max(0.0, (timezone.now() - since).total_seconds()) if since else None


class Subscription(models.Model):
    """Our record of one Graph change-notification subscription.

    The clientState is random per subscription and stored Fernet-encrypted (crypto.py); the
    receiver decrypts it and compares in constant time. It is never shown or logged.
    """

    class State(models.TextChoices):
        CREATING = "creating", "Creating"  # row written, POST /subscriptions not confirmed
        ACTIVE = "active", "Active"
        REMOVED = "removed", "Missing in Graph"  # gone from Graph; recreated automatically
        FAILED = "failed", "Failed"  # creation failed; last_error says why

    monitored_user = models.ForeignKey(
        MonitoredUser,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="subscriptions",
    )
    kind = models.CharField(max_length=20, choices=ResourceKind.choices)
    graph_id = models.CharField(
        "Graph subscription id", max_length=64, null=True, blank=True, unique=True
    )
    resource = models.CharField(max_length=500)
    change_types = models.CharField(max_length=100)
    notification_url = models.CharField(max_length=500)
    lifecycle_url = models.CharField(max_length=500, blank=True)
    client_state_encrypted = models.TextField(editable=False)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.CREATING, db_index=True
    )
    expiration = models.DateTimeField(null=True, blank=True, db_index=True)
    # Start of the current lifetime (creation or last renewal): half-life is measured from it.
    lifetime_started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_renewed_at = models.DateTimeField(null=True, blank=True)
    last_reauthorized_at = models.DateTimeField(null=True, blank=True)
    last_notification_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    # When the portal found that Graph no longer has it (lapse()); null while it is live.
    missing_since = models.DateTimeField(null=True, blank=True)
    replaced_by = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    objects = SubscriptionQuerySet.as_manager()

    class Meta:
        ordering = ["monitored_user_id", "kind", "-id"]
        indexes = [
            models.Index(fields=["monitored_user", "kind", "state"], name="ms_sub_user_kind_state")
        ]

    # The tenant-wide chat subscription's resource: every chat message of the organisation
    # ("chatMessage: getAllMessages" on /chats), one subscription instead of one per user.
    TENANT_CHATS_RESOURCE = "chats/getAllMessages"

    def __str__(self) -> str:
        if self.tenant_wide:
            return f"{self.kind} for the whole tenant ({self.state})"
        return f"{self.kind} for {self.monitored_user or '?'} ({self.state})"

    def __repr__(self) -> str:
        return f"<Subscription #{self.pk} {self.graph_id} {self.state}>"

    @property
    def tenant_wide(self) -> bool:
        """One subscription for every user's chats (no user of its own)."""
        return self.monitored_user_id is None and self.resource == self.TENANT_CHATS_RESOURCE

    def client_state(self) -> str:
        """The plaintext clientState, for the receiver's comparison and Graph only."""

        return decrypt(self.client_state_encrypted)


class TeamsChat(models.Model):
    """Which monitored users are members of one Teams chat, as Graph listed them ("List
    members of a chat"): the tenant-wide chat subscription's notifications name the chat, not
    the users, so the drain looks the chat up here to sync the monitored members' chats and
    to drop the notifications of chats with none. Refreshed after CHAT_MEMBERS_REFRESH_MINUTES
    (members come and go)."""

    chat_id = models.CharField(max_length=255, primary_key=True)
    monitored_user_ids = models.JSONField(default=list, blank=True)
    refreshed_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.chat_id} ({len(self.monitored_user_ids)} monitored)"


class LifecycleEvent(models.Model):
    """A lifecycle notification ("Reduce missing subscriptions and change notifications"), stored,
    then handled by a job."""

    class Event(models.TextChoices):
        REAUTHORIZATION_REQUIRED = "reauthorizationRequired"
        SUBSCRIPTION_REMOVED = "subscriptionRemoved"
        MISSED = "missed"

    class Status(models.TextChoices):
        RECEIVED = "received"
        HANDLED = "handled"
        IGNORED = "ignored"  # nothing to do (subscription already replaced or unknown here)
        FAILED = "failed"

    subscription = models.ForeignKey(
        Subscription,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="lifecycle_events",
    )
    subscription_graph_id = models.CharField(max_length=64, db_index=True)
    event = models.CharField(max_length=32, choices=Event.choices)
    subscription_expiration = models.DateTimeField(null=True, blank=True)
    dedupe_key = models.CharField(max_length=64, unique=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.RECEIVED)
    handled_at = models.DateTimeField(null=True, blank=True)
    outcome = models.TextField(blank=True)
    # The job that handles the event, and the delta sync it started (catch-up / resync).
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    followup_job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            # What the inbox drain has not taken yet (it enqueues the job).
            models.Index(
                fields=["id"],
                condition=Q(status="received", job__isnull=True),
                name="lifecycle_untaken",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event} for {self.subscription_graph_id} ({self.status})"
