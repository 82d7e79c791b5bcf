"""Graph call log, client-secret store, the delegated Teams sender and worker pings."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import Lower
from django.utils import timezone

from integrations.microsoft.errors import TokenError
from portal.crypto import decrypt

# ------------------------------------------------------------------------- the figures
# Each figure the dashboard, the API, the alerts and /metrics show has one definition: a
# method on its model's QuerySet below (tests/portal/test_figures.py proves
# that every consumer reports the same number for the same rows).

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


def credential_mismatch(tenant_id: str, client_id: str) -> str:
    """Why a secret recorded for (tenant_id, client_id) cannot be used with the configured
    tenant and client ("" = it can; blank recorded values are not checked)."""
    tenant = settings.MICROSOFT_TENANT_ID or ""
    client = settings.MICROSOFT_CLIENT_ID or ""
    if (tenant_id and tenant_id.lower() != tenant.lower()) or (
        client_id and client_id.lower() != client.lower()
    ):
        return (
            f"the stored secret is for tenant {tenant_id} / client {client_id}; run "
            f"connect_tenant (configured: tenant {tenant or '(unset)'} / client "
            f"{client or '(unset)'})"
        )
    return ""


def refuse_foreign_credential(tenant_id: str, client_id: str) -> None:
    """Raise TokenError when a secret of another app registration would be used: refused
    here instead of by Entra (AADSTS7000215), and without any request."""

    mismatch = credential_mismatch(tenant_id, client_id)
    if mismatch:
        raise TokenError(mismatch + ".", error="credential_mismatch")


class CredentialQuerySet(models.QuerySet["Credential"]):
    def active(self) -> CredentialQuerySet:
        """The secret used for tokens (at most one: a constraint)."""
        return self.filter(state=Credential.State.ACTIVE)

    def active_expires_in(self) -> timedelta | None:
        """Time left until the active secret expires (negative: expired); None when there is
        no active secret or its expiry is not recorded."""
        expires = self.active().values_list("expires_at", flat=True).first()
        return expires - timezone.now() if expires else None


class Credential(models.Model):
    """How the portal proves it is the app registration: a client secret, a certificate (its
    private key encrypted like a secret, the certificate itself in clear) or workload identity
    (a federated token read from MICROSOFT_CLIENT_ASSERTION_FILE: nothing stored).

    Life cycle: pending (added) → verified (a fresh MSAL app got a token with it) → active
    (used for every token) → grace (previous active, kept for rollback until grace_until) →
    retired (ciphertext erased).
    """

    class State(models.TextChoices):
        PENDING = "pending", "Pending"
        ACTIVE = "active", "Active"
        GRACE = "grace", "Grace period"
        RETIRED = "retired", "Retired"

    class Kind(models.TextChoices):
        SECRET = "secret", "Client secret"
        CERTIFICATE = "certificate", "Certificate"
        FEDERATED = "federated", "Workload identity"

    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.SECRET)
    display_name = models.CharField(max_length=120)
    # The app registration this secret belongs to: a secret only works for its own tenant and
    # client, so a mismatch with the configured ones stops token requests before Entra sees
    # them ("" = recorded before this was tracked: not checked).
    tenant_id = models.CharField(max_length=100, blank=True, editable=False)
    client_id = models.CharField(max_length=100, blank=True, editable=False)
    # Fernet ciphertext (crypto.encrypt) of the secret or the certificate's private key;
    # "" once retired, and always for workload identity.
    secret_encrypted = models.TextField(blank=True, editable=False)
    # Certificates only: the public certificate (PEM) and what Entra ID shows of it.
    certificate_pem = models.TextField(blank=True, editable=False)
    thumbprint = models.CharField(max_length=64, blank=True, editable=False)
    subject = models.CharField(max_length=300, blank=True, editable=False)
    # First 12 hex digits of SHA-256(secret): tells secrets apart without revealing any part.
    fingerprint = models.CharField(max_length=16, db_index=True, editable=False)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.PENDING, db_index=True
    )
    created_at = models.DateTimeField(default=timezone.now)
    created_by = models.CharField(max_length=150, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    grace_until = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)
    last_verified_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    objects = CredentialQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # Exactly one secret is used for tokens at any time.
            models.UniqueConstraint(
                fields=["state"],
                condition=Q(state="active"),
                name="microsoft_one_active_credential",
            ),
            # One rollback target at most.
            models.UniqueConstraint(
                fields=["state"], condition=Q(state="grace"), name="microsoft_one_grace_credential"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} (…{self.fingerprint}, {self.state})"

    def __repr__(self) -> str:
        return f"<Credential #{self.pk} {self.fingerprint} {self.state}>"

    @property
    def is_verified(self) -> bool:
        """Verified since the last failure (a failed verification clears it)."""
        return self.last_verified_at is not None and not self.last_error

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def expires_in(self) -> timedelta | None:
        """Time left until expiry (negative: expired); None when not recorded."""
        return self.expires_at - timezone.now() if self.expires_at else None

    def configuration_mismatch(self) -> str:
        """Why this secret cannot be used with the configured tenant and client ("" = it can)."""
        return credential_mismatch(self.tenant_id, self.client_id)

    def refuse_if_foreign(self) -> None:
        refuse_foreign_credential(self.tenant_id, self.client_id)

    def secret_value(self) -> str:
        """The plaintext secret, for MSAL only. Never log, render or audit it."""

        if not self.secret_encrypted:
            raise ValueError(f"Credential #{self.pk} is retired; its secret was erased.")
        return decrypt(self.secret_encrypted)


class DelegatedAccount(models.Model):
    """The service account that sends Teams messages (app-only tokens cannot: "Send chatMessage in
    a channel or a chat").

    Its MSAL token cache (refresh token included) is stored encrypted; the current sender is
    the most recently connected account that is not disconnected.
    """

    upn = models.CharField("user principal name", max_length=255)
    display_name = models.CharField(max_length=255, blank=True)
    home_account_id = models.CharField(max_length=255, blank=True, editable=False)
    scopes = models.CharField(max_length=500, blank=True)
    token_cache_encrypted = models.TextField(blank=True, editable=False)
    # Bumped on every cache write so each process knows when to reload its copy.
    cache_version = models.PositiveIntegerField(default=0, editable=False)
    connected_at = models.DateTimeField(default=timezone.now)
    connected_by = models.CharField(max_length=150, blank=True)
    disconnected_at = models.DateTimeField(null=True, blank=True)
    last_refresh_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-connected_at", "-id"]

    def __str__(self) -> str:
        return self.upn

    def __repr__(self) -> str:
        return f"<DelegatedAccount #{self.pk} {self.upn}>"


# =====================================================================================
# Webhooks and delta sync. Owned by the webhook/sync work:
# MonitoredUser, Subscription, LifecycleEvent, NotificationInbox, WebhookRejection,
# SyncState, SyncRun, SyncedItem. Fields the workers own are edited only by the services.
# =====================================================================================


class ResourceKind(models.TextChoices):
    MESSAGES = "messages", "Outlook inbox messages"
    CHAT_MESSAGES = "chatMessages", "Teams chat messages"


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

    def __str__(self) -> str:
        return f"{self.kind} for {self.monitored_user or '?'} ({self.state})"

    def __repr__(self) -> str:
        return f"<Subscription #{self.pk} {self.graph_id} {self.state}>"

    def client_state(self) -> str:
        """The plaintext clientState, for the receiver's comparison and Graph only."""

        return decrypt(self.client_state_encrypted)


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
    job = models.ForeignKey(
        "jobs.Job",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,
        help_text="The processing job of this batch (before the inbox became the queue)",
    )
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
    # that trace (portal/tracing.py); "" when tracing is off.
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
            models.Index(fields=["job"], condition=Q(job__isnull=False), name="inbox_job"),
            models.Index(
                fields=["sync_job"], condition=Q(sync_job__isnull=False), name="inbox_sync_job"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.change_type} {self.kind} {self.resource_id[:20]} ({self.status})"


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


# =====================================================================================
# Outbound mail and Teams messages. Owned by messaging.py: rows are
# created by send_mail() / send_teams_message() together with their job, and changed only
# by the job's handler (messaging_handlers.py).
# =====================================================================================


class OutboundMessageQuerySet(models.QuerySet["OutboundMessage"]):
    """The outbound figures the dashboard, the API, the alerts and /metrics show (one
    definition each)."""

    def failed_last_hour(self) -> int:
        """Messages that failed for good in the last hour."""
        return self.failed_within(3600)

    def failed_within(self, seconds: float) -> int:
        """Messages that failed for good in the last `seconds`."""
        return self.filter(
            status=OutboundMessage.Status.FAILED,
            last_error_at__gte=timezone.now() - timedelta(seconds=seconds),
        ).count()

    def oldest_unsent_seconds(self) -> float | None:
        """Age of the oldest message not sent yet (queued, or sending and being retried);
        None when there is none."""
        oldest = self.filter(
            status__in=[OutboundMessage.Status.QUEUED, OutboundMessage.Status.SENDING]
        ).aggregate(oldest=Min("created_at"))["oldest"]
        return (timezone.now() - oldest).total_seconds() if oldest else None


class OutboundMessage(models.Model):
    """One e-mail or Teams message the portal sends, and how far sending it got.

    `step` is written *before* each Graph call that has a side effect, so a retry after a
    crash knows what may already have happened and checks Graph before repeating it:
    mail goes out as a draft tagged with `idempotency_key` (found again by that tag), Teams
    posts are looked for in the chat's recent messages.
    """

    class Channel(models.TextChoices):
        MAIL = "mail", "E-mail"
        TEAMS_CHAT = "teams_chat", "Teams chat"
        TEAMS_CHANNEL = "teams_channel", "Teams channel"

    class Status(models.TextChoices):
        QUEUED = "queued"  # job waiting for its first run
        SENDING = "sending"  # a run started (and may have to be retried)
        SENT = "sent"
        FAILED = "failed"  # its job is dead: last_error says why
        CANCELLED = "cancelled"  # cancelled before anything could have been sent

    class Step(models.TextChoices):
        NONE = "", "Nothing sent to Graph yet"
        DRAFT_REQUESTED = "draft_requested", "Draft creation requested"
        DRAFT_CREATED = "draft_created", "Draft created"
        SEND_REQUESTED = "send_requested", "Draft send requested"
        POST_REQUESTED = "post_requested", "Teams post requested"
        DONE = "done", "Done"

    id = models.BigAutoField(primary_key=True)
    channel = models.CharField(max_length=16, choices=Channel.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    step = models.CharField(max_length=16, choices=Step.choices, blank=True, default="")
    # Also the job's idempotency key and the value of the draft's extended-property tag.
    idempotency_key = models.CharField(max_length=200, unique=True)
    sender = models.CharField(
        max_length=255, blank=True, help_text="Mail: the sending mailbox. Teams: the sender account"
    )
    to_recipients = models.JSONField(default=list, blank=True)
    cc_recipients = models.JSONField(default=list, blank=True)
    bcc_recipients = models.JSONField(default=list, blank=True)
    chat_id = models.CharField(max_length=255, blank=True)
    # Teams 1:1: the recipient's UPN; the job finds or creates the chat and sets chat_id.
    to_user = models.CharField(max_length=255, blank=True)
    team_id = models.CharField(max_length=64, blank=True)
    channel_id = models.CharField(max_length=255, blank=True)
    subject = models.CharField(max_length=400, blank=True)
    body = models.TextField()
    content_type = models.CharField(max_length=8, default="text")  # "text" or "html"
    importance = models.CharField(max_length=8, default="normal")  # mail: "normal" or "high"
    # The message this one resends (a new message, linked to the original).
    resend_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="resends"
    )
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    graph_draft_id = models.CharField(max_length=255, blank=True)
    # Mail: the draft's id (immutable id requested); Teams: the chatMessage id.
    graph_message_id = models.CharField(max_length=255, blank=True)
    internet_message_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    created_by = models.CharField(max_length=150, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True)
    step_at = models.DateTimeField(
        null=True, blank=True, help_text="When the current step was requested"
    )
    budget_slot_at = models.DateTimeField(
        null=True, blank=True, help_text="A reserved sending slot (rate budget)"
    )
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)

    objects = OutboundMessageQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["status", "id"], name="ms_outbound_status_idx"),
            models.Index(fields=["created_by", "id"], name="ms_outbound_creator_idx"),
            # The console's search finds a sent mail by its internetMessageId.
            models.Index(
                fields=["internet_message_id"],
                name="ms_outbound_imid_idx",
                condition=~Q(internet_message_id=""),
            ),
        ]
        constraints = [
            # Two outbound rows never claim the same Graph message (the Teams retry check).
            models.UniqueConstraint(
                fields=["channel", "graph_message_id"],
                condition=~Q(graph_message_id=""),
                name="ms_outbound_graph_message_unique",
            ),
        ]

    def __str__(self) -> str:
        target = (
            ", ".join(self.to_recipients[:2])
            if self.channel == "mail"
            else (self.chat_id or self.channel_id)
        )
        return f"{self.get_channel_display()} to {target} ({self.status})"

    def __repr__(self) -> str:
        return f"<OutboundMessage #{self.pk} {self.channel} {self.status}>"


class SendBudget(models.Model):
    """A shared sending budget (mailbox, chat, channel or Teams sender), for every worker.

    `next_slot_at` is the earliest time the next send may leave (slots are handed out one
    interval apart); `blocked_until` is a Retry-After window Graph gave us. Rows are taken
    with SELECT … FOR UPDATE for a few milliseconds, never while waiting.
    """

    key = models.CharField(max_length=300, primary_key=True)
    next_slot_at = models.DateTimeField()
    blocked_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.key}: next {self.next_slot_at:%H:%M:%S.%f}"


class MailboxLease(models.Model):
    """One Graph request in flight for a mailbox, held by any worker process: Graph allows
    four at a time per app and mailbox ("Microsoft Graph service-specific throttling limits",
    Outlook service limits), counted across every process and node. A lease lapses at
    `expires_at` (the request's own timeout), so a crashed holder frees its slot."""

    key = models.CharField(max_length=300, db_index=True)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.key} until {self.expires_at:%H:%M:%S.%f}"


# =====================================================================================
# The end-to-end probe (integrations/microsoft/probe.py): a tagged mail the portal sends to
# itself, measured stage by stage. Probe traffic is never an OutboundMessage, a SyncedItem
# or a feed event.
# =====================================================================================


@dataclass(frozen=True)
class ProbeFigures:
    """The latest finished probe's stage latencies (seconds after the send was accepted)."""

    finished_at: datetime | None
    status: str
    send_seconds: float | None
    notification_seconds: float | None
    delta_seconds: float | None


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return round((end - start).total_seconds(), 3) if start and end else None


class ProbeQuerySet(models.QuerySet["Probe"]):
    def finished(self) -> ProbeQuerySet:
        return self.filter(finished_at__isnull=False)

    def figures_by_channel(self) -> dict[str, ProbeFigures]:
        """figures() of each channel that has a finished probe (mail, teams_chat)."""
        channels = self.finished().values_list("channel", flat=True).distinct().order_by()
        return {channel: self.filter(channel=channel).figures() for channel in sorted(channels)}

    def figures(self) -> ProbeFigures:
        """The latest finished probe, as the dashboard, /metrics, the API and the alerts
        read it (per channel: figures_by_channel)."""
        probe = self.finished().order_by("-finished_at", "-id").first()
        if probe is None:
            return ProbeFigures(None, "", None, None, None)
        return ProbeFigures(
            probe.finished_at,
            probe.status,
            _seconds_between(probe.started_at, probe.sent_at),
            _seconds_between(probe.sent_at, probe.notified_at),
            _seconds_between(probe.sent_at, probe.synced_at),
        )


class Probe(models.Model):
    """One end-to-end probe: send accepted → notification received → delta synced."""

    class Status(models.TextChoices):
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent, being measured"
        MEASURED = "measured", "Arrived (notification and delta)"
        NO_NOTIFICATION = "no_notification", "Seen by delta, no notification"
        NOT_SYNCED = "not_synced", "Not seen by delta"
        FAILED = "failed", "Could not be sent"

    class Channel(models.TextChoices):
        MAIL = "mail", "E-mail"
        TEAMS_CHAT = "teams_chat", "Teams chat"

    # One scheduled probe per interval slot and channel (a tick run twice sends once); null:
    # run by hand.
    slot = models.BigIntegerField(null=True, blank=True)
    channel = models.CharField(max_length=16, choices=Channel.choices, default=Channel.MAIL)
    tag = models.CharField(max_length=40, unique=True)
    sender = models.CharField(max_length=255)
    mailbox = models.CharField(max_length=255, help_text="Mail: the probe mailbox. Teams: the chat")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.SENDING)
    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)
    deleted_at = models.DateTimeField(null=True, blank=True)
    graph_message_id = models.CharField(max_length=255, blank=True, db_index=True)
    error = models.TextField(blank=True)
    created_by = models.CharField(max_length=150, blank=True)

    objects = ProbeQuerySet.as_manager()

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["slot", "channel"], name="ms_probe_slot_channel")
        ]

    def __str__(self) -> str:
        return f"probe {self.tag} ({self.status})"
