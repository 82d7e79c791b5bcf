"""The event feed: `emit()` appends (the one function producers call), `read()` pages it.

Producers (the sync engine, the outbound jobs, subscription health) call `emit()` inside the
transaction of the change the event describes, so an event exists exactly when its change
was committed. This package knows no Graph: the integration imports `emit`, never the
other way round.

Ordering: on PostgreSQL two transactions could take ids 7 and 8 and commit 8 first; a reader
would then see 8, move its cursor past 7 and never see it. `emit()` therefore takes a
transaction-scoped advisory lock before inserting, so event-producing transactions commit
in id order (SQLite already runs one writer at a time). The lock is held from the first
emit to commit: producers emit at the end of their transaction, after their slow work.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from portal.events.models import Event, EventEndpoint
from portal.jobs.runner import enqueue
from portal.lib.tracing import current_traceparent, span

EVENT_TYPES: dict[str, str] = {
    "mail.received": "A new e-mail in a monitored mailbox",
    "mail.updated": "An e-mail in a monitored mailbox changed (read, flagged, moved…)",
    "mail.deleted": "An e-mail left a monitored mailbox",
    "chat_message.received": "A new Teams chat message for a monitored user",
    "chat_message.updated": "A Teams chat message was edited",
    "chat_message.deleted": "A Teams chat message was deleted",
    "message.sent": "An outbound e-mail or Teams message was sent",
    "message.failed": "An outbound e-mail or Teams message failed for good",
    "subscription.lapsed": "A Graph webhook subscription expired or was removed",
    "sync.failed": "A delta sync run failed",
    "test": "A test event sent from the console",
}
# What the console shows for each type (the type itself in small print, for a search).
EVENT_TYPE_LABELS: dict[str, str] = {
    "mail.received": "Mail received",
    "mail.updated": "Mail changed",
    "mail.deleted": "Mail removed",
    "chat_message.received": "Teams message received",
    "chat_message.updated": "Teams message edited",
    "chat_message.deleted": "Teams message deleted",
    "message.sent": "Message sent",
    "message.failed": "Message failed",
    "subscription.lapsed": "Subscription lapsed",
    "sync.failed": "Sync failed",
    "test": "Test event",
}


def event_type_label(name: str) -> str:
    """The human name of an event type (the type name itself when it has none)."""
    return EVENT_TYPE_LABELS.get(name, name)


# Arbitrary fixed key for pg_advisory_xact_lock (the audit chain uses another).
_APPEND_LOCK_KEY = 7_401_305_114
FAN_OUT_JOB = "events.fan_out"
POLL_INTERVAL = 0.25
MAX_WAIT_SECONDS = 30
MAX_PAGE = 500


def _lock_appends() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_APPEND_LOCK_KEY])


def emit(
    event_type: str, data: dict[str, Any], *, subject: str = "", occurred_at: datetime | None = None
) -> Event:
    """Append one event in the caller's transaction."""
    return emit_many([(event_type, data, subject, occurred_at)])[0]


def emit_many(events: Iterable[tuple[str, dict[str, Any], str, datetime | None]]) -> list[Event]:
    """Append several events (in order) in the caller's transaction."""
    rows = []
    now = timezone.now()
    for event_type, data, subject, occurred_at in events:
        if event_type not in EVENT_TYPES:
            raise ValueError(f"Unknown event type {event_type!r}")
        rows.append(
            Event(
                type=event_type,
                data=data,
                subject=subject[:255],
                occurred_at=occurred_at or now,
                created_at=now,
            )
        )
    if not rows:
        return []
    # No savepoint: the caller's transaction is the unit (an event exists exactly when its
    # change commits), and no caller recovers from a failed append inside it.
    with (
        span("events.emit", attributes={"events": len(rows)}),
        transaction.atomic(savepoint=False),
    ):
        _lock_appends()
        created = Event.objects.bulk_create(rows)
        # The fan-out continues this span's trace, though it is queued after the commit.
        transaction.on_commit(functools.partial(kick_fan_out, current_traceparent()))
    return created


def kick_fan_out(trace_context: str | None = None) -> None:
    """Hand new events to the endpoints now (after the appending commit; a one-minute
    schedule catches anything this misses). Emitted by a job (the sync engine, the sends),
    the fan-out runs in the same worker right after it, not after another worker's wake-up:
    one hop fewer between a change and its delivery; elsewhere a worker takes it."""
    if EventEndpoint.objects.filter(state=EventEndpoint.State.ACTIVE).exists():
        enqueue(FAN_OUT_JOB, {}, created_by="events", trace_context=trace_context, follow_up=True)


def parse_types(raw: str) -> list[str]:
    types = sorted({t.strip() for t in raw.split(",") if t.strip()})
    unknown = [t for t in types if t not in EVENT_TYPES]
    if unknown:
        raise ValueError(
            f"Unknown event types: {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}."
        )
    return types


def read(
    after: int = 0, *, limit: int = 100, types: list[str] | None = None, wait: float = 0
) -> list[Event]:
    """Events after the cursor, oldest first; with `wait`, block up to that many seconds
    for the first one (long-polling)."""
    deadline = time.monotonic() + min(max(wait, 0), MAX_WAIT_SECONDS)
    queryset = Event.objects.filter(pk__gt=after)
    if types:
        queryset = queryset.filter(type__in=types)
    while True:
        events = list(queryset.order_by("id")[:limit])
        if events or time.monotonic() >= deadline:
            return events
        time.sleep(POLL_INTERVAL)


def latest_cursor() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def event_json(event: Event) -> dict[str, Any]:
    return {
        "id": str(event.pk),
        "type": event.type,
        "occurredAt": event.occurred_at,
        "subject": event.subject,
        "data": event.data,
    }
