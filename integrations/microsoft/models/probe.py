"""The end-to-end probe (integrations/microsoft/probe.py): a tagged mail the portal sends to
itself, measured stage by stage. Probe traffic is never an OutboundMessage, a SyncedItem or a
feed event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db import models
from django.utils import timezone


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
