"""Sending budgets and the settings that pace sends, shared by every worker through the
SendBudget table (throttle.py's slots and windows).

At most MESSAGING_MAIL_PER_MINUTE sends per sending mailbox (Exchange Online: 30/min), at most
MESSAGING_TEAMS_PER_SECOND posts per chat or channel and MESSAGING_TEAMS_SENDER_PER_SECOND per
sender account (Graph: 1 per second per chat/channel and 1 per user). A send waits for its slot
in the worker up to MESSAGING_MAX_BUDGET_WAIT_SECONDS; a later slot is reserved for it and the
job comes back then. A 429 or 503 with Retry-After blocks the mailbox/chat for every worker
until it has passed. The clock is each worker's; hosts must keep time (NTP).
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from integrations.graph import throttle
from integrations.microsoft.models import OutboundMessage
from portal.jobs.errors import TransientJobError


def _setting(name: str) -> float:
    """Read at call time, so tests and a changed environment apply without a restart."""
    return float(getattr(settings, name))


def mail_per_minute() -> float:
    return _setting("MESSAGING_MAIL_PER_MINUTE")


def teams_per_second() -> float:
    return _setting("MESSAGING_TEAMS_PER_SECOND")


def teams_sender_per_second() -> float:
    return _setting("MESSAGING_TEAMS_SENDER_PER_SECOND")


def max_budget_wait() -> float:
    return _setting("MESSAGING_MAX_BUDGET_WAIT_SECONDS")


def send_settle_seconds() -> float:
    return _setting("MESSAGING_SEND_SETTLE_SECONDS")


def teams_settle_seconds() -> float:
    return _setting("MESSAGING_TEAMS_SETTLE_SECONDS")


def teams_token_kind() -> str:
    # "app" exists only to show (and test) Graph's refusal; never configure it in production.
    return str(settings.MESSAGING_TEAMS_TOKEN_KIND)


class BudgetWait(TransientJobError):
    """The send's slot is later than a worker should wait: the job comes back then."""


def wait_for_slot(message: OutboundMessage, keys: list[tuple[str, float]]) -> None:
    """Sleep until this message may be sent, or reserve a later slot and hand back."""
    now = timezone.now()
    slot = message.budget_slot_at
    # A reservation is honoured only while it is (nearly) on time: a late one could bunch up
    # with the slots after it, so it is dropped and a new one taken.
    if slot is not None and slot + timedelta(seconds=0.5) < now:
        slot = None
    if slot is None or any(
        throttle.blocked_for(key) > (slot - now).total_seconds() for key, _ in keys
    ):
        slot = throttle.reserve_slot(keys)
        OutboundMessage.objects.filter(pk=message.pk).update(budget_slot_at=slot)
        message.budget_slot_at = slot
    wait = (slot - timezone.now()).total_seconds()
    if wait > max_budget_wait():
        raise BudgetWait(
            f"Sending budget: this message's slot is in {wait:.0f} s",
            retry_after=max(0.0, wait - 0.2),
        )
    if wait > 0:
        time.sleep(wait)
