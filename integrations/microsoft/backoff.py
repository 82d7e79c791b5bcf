"""An operator's back-off for one mailbox: no Graph request for it for N minutes.

It is a shared throttle window (throttle.share_block on the mailbox's key), the same every
worker already honours after a 429: each request for the mailbox waits its turn (the Graph
client's `request.await_turn`), and a job whose wait is longer than
GRAPH_MAX_IN_PROCESS_WAIT_SECONDS is rescheduled to the window's end (LocalThrottle), retries
already scheduled included. The other mailboxes go on.
Who set it, why and until when is in the audit log (action graph.mailbox_backoff).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from integrations.graph import throttle
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.models import AuditEvent
from portal.audit.services import record

ACTION = "graph.mailbox_backoff"
MIN_MINUTES, MAX_MINUTES = 1, 24 * 60


class BackoffError(ValueError):
    """A back-off that cannot be set (the message says why)."""


@dataclass(frozen=True)
class MailboxBackoff:
    mailbox: str  # as the operator named it
    key: str  # the mailbox's throttle key (its Graph id when known)
    until: datetime
    by: str
    reason: str

    @property
    def seconds_left(self) -> int:
        return max(0, int((self.until - timezone.now()).total_seconds()))


def back_off_mailbox(actor: Actor, mailbox: str, minutes: int, reason: str) -> MailboxBackoff:
    """Hold every Graph request for `mailbox` (UPN or Graph id) for `minutes`, audited."""
    mailbox = (mailbox or "").strip()
    require(
        actor, "pause_processing", action=ACTION, target_type="mailbox", target_id=mailbox[:200]
    )
    if not mailbox or len(mailbox) > 255:
        raise BackoffError("Name the mailbox to back off (its address or Graph id).")
    if not MIN_MINUTES <= minutes <= MAX_MINUTES:
        raise BackoffError(
            f"Back off for between {MIN_MINUTES} minute and {MAX_MINUTES} minutes (one day)."
        )
    if not (reason or "").strip():
        raise BackoffError("Say why the mailbox is backed off (the audit log keeps it).")
    key = throttle.mailbox_id(mailbox)
    until = timezone.now() + timedelta(minutes=minutes)
    with transaction.atomic():
        throttle.share_block(throttle.mailbox_key(key), minutes * 60.0)
        record(
            ACTION,
            actor=actor,
            target_type="mailbox",
            target_id=key,
            params={"mailbox": mailbox, "minutes": minutes, "until": until.isoformat()},
            reason=reason.strip(),
        )
    return MailboxBackoff(mailbox, key, until, actor.name, reason.strip())


def active_backoffs(limit: int = 50) -> list[MailboxBackoff]:
    """The operators' back-offs still running, latest end first (one per mailbox)."""
    now = timezone.now()
    found: dict[str, MailboxBackoff] = {}
    events = AuditEvent.objects.filter(
        action=ACTION, outcome=AuditEvent.Outcome.SUCCESS, created_at__gte=now - timedelta(days=1)
    ).order_by("-id")
    for event in events[:500]:
        params: dict[str, Any] = event.params or {}
        until = parse_datetime(str(params.get("until", "")))
        if until is None or until <= now:
            continue
        current = found.get(event.target_id)
        if current is None or current.until < until:
            found[event.target_id] = MailboxBackoff(
                str(params.get("mailbox", event.target_id)),
                event.target_id,
                until,
                event.actor_name,
                event.reason,
            )
    return sorted(found.values(), key=lambda b: b.until, reverse=True)[:limit]
