"""The inbox is the queue: the drain that turns stored notifications into work.

The receiver (`notifications.ingest`) only INSERTs inbox rows (and lifecycle rows) and
commits. A drain claims unprocessed rows in batches — `SELECT … FOR UPDATE SKIP LOCKED` on
PostgreSQL, so any number of drains share the work without waiting on each other; SQLite's
IMMEDIATE transactions take turns — and, in the SAME transaction, causes their work (a
coalesced delta-sync job, or a "due" mark when real-time sync is off; a lifecycle event's
job) and marks them processed. A drain killed at any moment rolls back: its rows are
pending and unlocked again, so nothing accepted is lost and nothing is processed twice.

Wake-ups: on PostgreSQL the receiver NOTIFYs `fleet_inbox` after each commit
(`portal.jobs.broker.notify`); the drain LISTENs on a connection of its own
(`portal.jobs.broker.Listener`), starting before it looks for rows, so a NOTIFY sent while
it drains ends its next wait at once. It polls every INBOX_DRAIN_IDLE_SECONDS anyway
(SQLite; a wake-up lost with a connection). The `graph.inbox.sweep` schedule drains
whatever is left when no drain process runs.

The drain has a pause switch of its own (`pause()` / `resume()`, audited; the jobs page and
the recovery procedure use it): while paused, notifications are accepted and wait.

Entry points: `drain_once()` (one batch), `drain_pending()` (until nothing is left),
`run()` (the loop behind `manage.py drain_inbox`), `sweep()` (the schedule). The backlog's
figures are `NotificationInbox.objects.pending()` and `.oldest_pending_seconds()`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import Case, DateTimeField, F, QuerySet, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone

from integrations.microsoft import probe, sync, tenant_chats
from integrations.microsoft.models import (
    InboxDrainPause,
    LifecycleEvent,
    NotificationInbox,
    Subscription,
)
from integrations.microsoft.notifications import CHANNEL, wake_drains
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.jobs.broker import Listener
from portal.jobs.runner import enqueue
from portal.lib.tracing import continued, current_traceparent
from portal.runtime.registry import get

logger = logging.getLogger(__name__)

LIFECYCLE_JOB = "graph.lifecycle_event"


def batch_size() -> int:
    return max(1, int(settings.INBOX_DRAIN_BATCH))


def idle_seconds() -> float:
    return max(0.01, float(settings.INBOX_DRAIN_IDLE_SECONDS))


@dataclass
class Drained:
    claimed: int = 0
    processed: int = 0
    ignored: int = 0
    targets: int = 0
    lifecycle: int = 0
    paused: bool = False

    def add(self, other: Drained) -> None:
        for name in ("claimed", "processed", "ignored", "targets", "lifecycle"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.paused = self.paused or other.paused


# --------------------------------------------------------------------------- pause switch

# The audit log's target for the drain's pause and resume (one drain switch, one target).
PAUSE_TARGET = "inbox_drain"


def paused() -> bool:
    return InboxDrainPause.objects.exists()


def pause_state() -> InboxDrainPause | None:
    """Who paused the drain, when and why; None while it runs."""
    return InboxDrainPause.objects.first()


def pause(actor: Actor, reason: str = "") -> bool:
    """Pause the drain (audited): notifications are still accepted and wait in the inbox.
    Drains finish the batch in hand. Returns False when it was already paused."""
    require(actor, "pause_processing", action="inbox.pause", target_type=PAUSE_TARGET)
    with transaction.atomic():
        _, created = InboxDrainPause.objects.get_or_create(
            pk=InboxDrainPause.SINGLETON,
            defaults={"paused_by": actor.name[:150], "reason": reason},
        )
        record(
            "inbox.pause",
            actor=actor,
            target_type=PAUSE_TARGET,
            target_id="drain",
            params={"already_paused": not created},
            reason=reason,
        )
    return created


def resume(actor: Actor) -> bool:
    """Resume the drain (audited) and wake it for what waited. Returns whether it was paused."""
    require(actor, "pause_processing", action="inbox.resume", target_type=PAUSE_TARGET)
    with transaction.atomic():
        deleted, _ = InboxDrainPause.objects.all().delete()
        record(
            "inbox.resume",
            actor=actor,
            target_type=PAUSE_TARGET,
            target_id="drain",
            params={"was_paused": bool(deleted)},
        )
    wake_drains()
    return bool(deleted)


# --------------------------------------------------------------------------- draining


def drain_once(limit: int | None = None) -> Drained:
    """Claim up to `limit` pending notifications (and lifecycle events), cause their work and
    mark them, each group in one transaction. Safe to run concurrently and to kill."""
    if paused():
        return Drained(paused=True)
    limit = limit or batch_size()
    done = _drain_notifications(limit)
    done.lifecycle = _drain_lifecycle(limit)
    return done


def drain_pending(*, deadline: float | None = None, limit: int | None = None) -> Drained:
    """Drain batch after batch until nothing is pending (or `deadline`, a monotonic time)."""
    total = Drained()
    limit = limit or batch_size()
    while True:
        done = drain_once(limit)
        total.add(done)
        if done.paused or (done.claimed < limit and done.lifecycle < limit):
            return total
        if deadline is not None and time.monotonic() > deadline:
            return total


def _drain_notifications(limit: int) -> Drained:
    realtime = bool(get("ENABLE_REALTIME_SYNC"))
    now = timezone.now()
    claim = NotificationInbox.objects.pending()
    # A plain read first: an idle poll takes no lock (SQLite's IMMEDIATE transaction would
    # take the database's write lock, in the receiver's way).
    if not claim.exists():
        return Drained()
    with transaction.atomic():
        rows = list(
            # Only the inbox rows are locked (the subscription is joined for its resource).
            claim.select_for_update(skip_locked=True, of=("self",))
            .order_by("id")
            .values_list(
                "id",
                "monitored_user_id",
                "kind",
                "subscription_id",
                "change_type",
                "resource_id",
                "trace_context",
                "resource",
                "subscription__resource",
                "received_at",
            )[:limit]
        )
        if not rows:
            return Drained()
        # The tenant-wide chat subscription's rows name a chat, not a user: its members'.
        members, waiting = _chat_members(rows)
        # The probe deletes its mail once measured: those deletions are probe traffic.
        probe_deletions = probe.probe_message_ids(
            row[5] for row in rows if row[4] == "deleted" and probe.mailbox()
        )
        targets: dict[tuple[int, str], list[int]] = {}
        # The webhook requests' traces: each target's claim continues the first, links the rest.
        traces: dict[tuple[int, str], dict[str, None]] = {}
        orphans: list[int] = []
        for (
            row_id,
            user_id,
            kind,
            sub_id,
            change_type,
            resource_id,
            traceparent,
            resource,
            sub_resource,
            _received_at,
        ) in rows:
            chat_id = (
                tenant_chats.chat_id_of(resource)
                if sub_resource == Subscription.TENANT_CHATS_RESOURCE and user_id is None
                else None
            )
            if chat_id is not None and chat_id in waiting:
                waiting[chat_id].append(row_id)
                continue
            users = members.get(chat_id, []) if chat_id is not None else [user_id]
            if sub_id is None or not users or None in users:
                # Its subscription or user is gone, or no member of its chat is monitored.
                orphans.append(row_id)
            elif change_type == "deleted" and resource_id in probe_deletions:
                orphans.append(row_id)
            else:
                for member in users:
                    targets.setdefault((member, kind), []).append(row_id)
                    traces.setdefault((member, kind), {})[traceparent] = None
        mine = NotificationInbox.objects.filter(status=NotificationInbox.Status.PENDING)
        # The members job syncs a waiting chat's rows once it knows who its members are.
        asked = tenant_chats.request_members(chat for chat, row_ids in waiting.items() if row_ids)
        if asked:
            _mark_processed(
                mine,
                {row: asked[chat].pk for chat, row_ids in waiting.items() for row in row_ids},
                now,
            )
        if orphans:
            mine.filter(pk__in=orphans).update(
                status=NotificationInbox.Status.IGNORED, processed_at=now
            )
        if targets:
            _cause_syncs(mine, targets, traces, realtime=realtime, now=now)
        _note_latest(rows)
    return Drained(
        claimed=len(rows),
        processed=len(rows) - len(orphans),
        ignored=len(orphans),
        targets=len(targets),
    )


def _cause_syncs(
    mine: QuerySet[NotificationInbox],
    targets: dict[tuple[int, str], list[int]],
    traces: dict[tuple[int, str], dict[str, None]],
    *,
    realtime: bool,
    now: datetime,
) -> None:
    """One coalesced delta job per (user, kind) of the batch (or a "due" mark when real-time
    sync is off), and the rows marked processed: a handful of statements for the whole batch,
    however many users it spans."""
    if not realtime:
        sync.mark_due(targets)
        mine.filter(pk__in=[pk for row_ids in targets.values() for pk in row_ids]).update(
            status=NotificationInbox.Status.PROCESSED, processed_at=now
        )
        return
    requests = []
    for (user_id, kind), row_ids in sorted(targets.items()):
        # Each target's claim continues the first webhook request's trace and links the rest;
        # its sync job continues the claim.
        parent, *others = traces[(user_id, kind)]
        with continued(
            parent,
            "graph.inbox.claim",
            links=others,
            attributes={"notifications": len(row_ids), "user.id": user_id, "kind": kind},
        ):
            requests.append(sync.DeltaRequest(user_id, kind, trace_context=current_traceparent()))
    jobs = sync.request_deltas(requests, trigger="notification", created_by="notification")
    # A chat's row may concern several members: it names the last member's job.
    _mark_processed(
        mine,
        {row_id: jobs[target].pk for target in sorted(targets) for row_id in targets[target]},
        now,
    )


def _mark_processed(
    mine: QuerySet[NotificationInbox], job_of_row: dict[int, int], now: datetime
) -> None:
    """Rows processed, each naming the job that does its work: one UPDATE."""
    rows_of_job: dict[int, list[int]] = {}
    for row_id, job_id in job_of_row.items():
        rows_of_job.setdefault(job_id, []).append(row_id)
    mine.filter(pk__in=job_of_row).update(
        status=NotificationInbox.Status.PROCESSED,
        processed_at=now,
        sync_job_id=Case(
            *(When(pk__in=row_ids, then=Value(job_id)) for job_id, row_ids in rows_of_job.items())
        ),
    )


def _note_latest(rows: list[tuple[Any, ...]]) -> None:
    """Per-subscription "last notification received", kept off the request path: one UPDATE
    for the batch, never moving a subscription's time backwards (another drain may have
    noted a later one)."""
    latest: dict[int, datetime] = {}
    for row in rows:
        sub_id, received_at = row[3], row[-1]
        if sub_id is not None and (sub_id not in latest or received_at > latest[sub_id]):
            latest[sub_id] = received_at
    if not latest:
        return
    newest = Case(
        *(When(pk=sub_id, then=Value(at)) for sub_id, at in latest.items()),
        output_field=DateTimeField(),
    )
    Subscription.objects.filter(pk__in=latest).update(
        last_notification_at=Greatest(Coalesce(F("last_notification_at"), newest), newest)
    )


def _chat_members(
    rows: list[tuple[Any, ...]],
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """For the tenant-wide subscription's rows among `rows`: the monitored members of the
    chats already known, and the chats whose members must be asked for first (their rows
    wait for that job)."""
    chats = {
        chat_id
        for *_, resource, sub_resource, _received_at in rows
        if sub_resource == Subscription.TENANT_CHATS_RESOURCE
        and (chat_id := tenant_chats.chat_id_of(resource))
    }
    if not chats:
        return {}, {}
    members = tenant_chats.known_members(chats)
    return members, {chat_id: [] for chat_id in chats if chat_id not in members}


def _drain_lifecycle(limit: int) -> int:
    """Lifecycle events need Graph calls (reauthorize, recreate): each gets a job, enqueued
    in the transaction that marks the event as taken (its job set)."""
    waiting = LifecycleEvent.objects.filter(status=LifecycleEvent.Status.RECEIVED, job__isnull=True)
    if not waiting.exists():
        return 0
    with transaction.atomic():
        events = list(
            waiting.select_for_update(skip_locked=True)
            .order_by("id")
            .values_list("id", flat=True)[:limit]
        )
        for event_id in events:
            job = enqueue(
                LIFECYCLE_JOB,
                {"event": event_id},
                created_by="webhook:lifecycle",
                idempotency_key=f"{LIFECYCLE_JOB}:{event_id}",
            )
            LifecycleEvent.objects.filter(pk=event_id).update(job=job)
    return len(events)


def sweep() -> dict[str, int]:
    """Schedule entry (every minute): drain what no drain process took — none runs, or a
    wake-up was missed. Bounded in time so it never outlives the worker's task timeout."""
    budget = min(45.0, settings.Q_TIMEOUT / 2)
    done = drain_pending(deadline=time.monotonic() + budget)
    return {"claimed": done.claimed, "lifecycle": done.lifecycle, "paused": int(done.paused)}


# --------------------------------------------------------------------------- the loop


def alive_file() -> Path:
    """Touched by the loop while it works: the drain container's liveness probe reads it."""
    return Path(settings.INBOX_DRAIN_ALIVE_FILE)


def run(should_stop: Callable[[], bool]) -> None:
    """The long-running drain (`manage.py drain_inbox`): drain, then wait for a wake-up.

    A failed batch (a database restart, a failover, a bug) is logged and retried with a
    growing pause; it rolled back, so its rows are simply claimed again."""
    listener = Listener(CHANNEL) if connection.vendor == "postgresql" else None
    failures = 0
    beat = 0.0
    try:
        while not should_stop():
            now = time.monotonic()
            if now - beat > 5:  # the loop turns (a database outage included): alive
                beat = now
                _touch(alive_file())
            close_old_connections()
            if listener is not None:
                # Before looking: a receiver's NOTIFY from now on ends the wait below at once.
                with contextlib.suppress(Exception):  # no connection: wait() polls meanwhile
                    listener.listen()
            try:
                done = drain_once()
                failures = 0
            except Exception as exc:
                # A database error (restart, failover) or a bug: the batch rolled back, so its
                # rows are claimed again; a backlog that stops shrinking fires inbox_stale.
                failures += 1
                log = logger.warning if isinstance(exc, DatabaseError) else logger.error
                log("Inbox drain: batch failed (attempt %s); retrying", failures, exc_info=True)
                connection.close()
                time.sleep(min(30.0, 0.2 * 2**failures))
                continue
            if done.paused:
                time.sleep(idle_seconds())
            elif done.claimed >= batch_size() or done.lifecycle:
                continue  # more is waiting: no pause
            elif listener is not None:
                listener.wait(idle_seconds())
            else:
                time.sleep(idle_seconds())
    finally:
        if listener is not None:
            listener.close()


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only /tmp only costs the probe
        path.touch()
        os.utime(path)
