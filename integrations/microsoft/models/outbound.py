"""Outbound mail and Teams messages, and the shared send budget and mailbox leases.

Rows are created by messaging/outbox.py (send_mail, send_teams_message) together with their job,
and changed only by the job's handler (messaging_handlers.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import models
from django.db.models import Min, Q
from django.utils import timezone

# An API send's key: "api <principal> <Idempotency-Key>" (a key has no spaces: the API checks).
API_KEY_PREFIX = "api "
# A key whose use expired and was sent again names the new message; the old one keeps its key
# as "api~<id> <principal> <Idempotency-Key>".
RETIRED_API_KEY_PREFIX = "api~"


def new_graph_tag() -> str:
    """A message's tag in the mailbox: random, so it never repeats, even after a restore."""
    return f"msg:{uuid.uuid4().hex}"


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

    def with_key(self, key: str) -> models.QuerySet[OutboundMessage]:
        """Messages by their idempotency key, or by the Idempotency-Key an API client sent
        (the console's filter and search: the client knows its own key, not ours)."""
        client = Q(idempotency_key__startswith=API_KEY_PREFIX) | Q(
            idempotency_key__startswith=RETIRED_API_KEY_PREFIX
        )
        return self.filter(
            Q(idempotency_key=key) | (client & Q(idempotency_key__endswith=f" {key}"))
        )


class OutboundMessage(models.Model):
    """One e-mail or Teams message the portal sends, and how far sending it got.

    `step` is written *before* each Graph call that has a side effect, so a retry after a
    crash knows what may already have happened and checks Graph before repeating it:
    mail goes out as a draft tagged with `graph_tag` (found again by that tag), Teams posts
    are looked for in the chat's recent messages.

    A message has one idempotency key, `idempotency_key`: queueing again with it returns this
    message (and its one job). An API send's is the client's Idempotency-Key scoped to the
    principal (`api_key()`); other callers give their own or get a random one.
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
    idempotency_key = models.CharField(max_length=400, unique=True)
    # The value of the mail draft's extended-property tag, by which a retry finds the draft or
    # the sent item in the mailbox: random, made once, never changed (a message from before
    # keys were one per message keeps its old key here, the tag its draft already carries).
    graph_tag = models.CharField(max_length=200, unique=True, default=new_graph_tag)
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

    @staticmethod
    def api_key(owner: str, client_key: str) -> str:
        """The key of a message an API principal (`owner`) sends with an Idempotency-Key."""
        return f"{API_KEY_PREFIX}{owner} {client_key}"

    @staticmethod
    def retired_api_key(key: str, message_id: int) -> str:
        return f"{RETIRED_API_KEY_PREFIX}{message_id} {key.removeprefix(API_KEY_PREFIX)}"

    @property
    def client_key(self) -> str:
        """The Idempotency-Key its API client sent ("" for a message not sent by the API)."""
        if self.idempotency_key.startswith((API_KEY_PREFIX, RETIRED_API_KEY_PREFIX)):
            return self.idempotency_key.rsplit(" ", 1)[-1]
        return ""


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


class BudgetSlot(models.Model):
    """One request's reserved send time under a shared sliding-window budget (`key`), for
    every worker: Graph counts some limits as N requests in any window of W seconds (the
    subscriptions API: "Microsoft Graph service-specific throttling limits"), so the k-th
    request may leave no earlier than W after the (k-N)-th (throttle.reserve_window_slot).
    Rows older than a window are pruned as new ones are taken."""

    key = models.CharField(max_length=100)
    at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["key", "at"], name="ms_budget_slot_key_at")]

    def __str__(self) -> str:
        return f"{self.key} at {self.at:%H:%M:%S.%f}"
