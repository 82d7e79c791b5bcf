"""The Graph client's call log and shared limits, kept in this app's tables.

The client (integrations.graph) declares what it needs in its ports; these classes keep it in
GraphCall, SendBudget, BudgetSlot, MailboxLease and MonitoredUser, and the app registers them
at start-up (apps.py). A database error becomes ports.StoreUnavailable, on which the client
carries on without the store (its own gate, a log line) — except for a send slot, whose
caller must know.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from integrations.graph.ports import GraphCallRecord, StoreUnavailable
from integrations.microsoft.models import (
    BudgetSlot,
    GraphCall,
    MailboxLease,
    MonitoredUser,
    SendBudget,
)


def _call_row(call: GraphCallRecord) -> GraphCall:
    return GraphCall(
        method=call.method[:8],
        route=call.route,
        status=call.status,
        duration_ms=call.duration_ms,
        throttled=call.throttled,
        retry_after=call.retry_after,
        request_id=call.request_id[:64],
        error_code=call.error_code[:100],
        mailbox=call.mailbox[:255],
        in_batch=call.in_batch,
    )


class GraphCallLog:
    """GraphCall rows: one INSERT per exchange (or per `$batch`), no reads."""

    def record(self, calls: Sequence[GraphCallRecord]) -> None:
        try:
            if len(calls) == 1:
                _call_row(calls[0]).save(force_insert=True)
            else:
                GraphCall.objects.bulk_create([_call_row(call) for call in calls])
        except DatabaseError as exc:
            raise StoreUnavailable(str(exc)) from exc


def _budget_row(key: str, now: datetime) -> SendBudget:
    """The key's row, locked (created on first use)."""
    row = SendBudget.objects.select_for_update().filter(key=key).first()
    if row is None:
        try:
            with transaction.atomic():
                SendBudget.objects.create(key=key, next_slot_at=now)
        except IntegrityError:
            pass
        row = SendBudget.objects.select_for_update().get(key=key)
    return row


class DatabaseSharedLimits:
    """Throttle windows and send slots in SendBudget, window-budget reservations in
    BudgetSlot, in-flight leases in MailboxLease, and the UPN → Graph id answers from
    MonitoredUser."""

    def graph_id_of(self, upn: str) -> str:
        try:
            found = (
                MonitoredUser.objects.filter(Q(upn__iexact=upn) | Q(identifier__iexact=upn))
                .exclude(graph_id="")
                .values_list("graph_id", flat=True)
                .first()
            )
        except DatabaseError as exc:
            raise StoreUnavailable(str(exc)) from exc
        return found or ""

    def extend_block(self, key: str, until: datetime) -> None:
        try:
            with transaction.atomic():
                row = _budget_row(key, timezone.now())
                if row.blocked_until is None or row.blocked_until < until:
                    SendBudget.objects.filter(key=key).update(blocked_until=until)
        except DatabaseError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def blocked_until(self, key: str) -> datetime | None:
        try:
            return (
                SendBudget.objects.filter(key=key).values_list("blocked_until", flat=True).first()
            )
        except DatabaseError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def in_transaction(self) -> bool:
        return transaction.get_connection().in_atomic_block

    def take_lease(
        self, key: str, *, limit: int, now: datetime, expires_at: datetime
    ) -> int | None:
        try:
            with transaction.atomic():
                _budget_row(key, now)  # the mailbox's row lock serialises the count and insert
                # One read for the count and the lapsed leases (a holder that died); they
                # are deleted only when there are some, which is rare.
                held = list(MailboxLease.objects.filter(key=key).values_list("pk", "expires_at"))
                lapsed = [pk for pk, expires in held if expires <= now]
                if lapsed:
                    MailboxLease.objects.filter(pk__in=lapsed)._raw_delete(MailboxLease.objects.db)
                if len(held) - len(lapsed) >= limit:
                    return None
                return MailboxLease.objects.create(key=key, expires_at=expires_at).pk
        except DatabaseError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def release_lease(self, lease_id: int) -> None:
        try:
            # One DELETE: QuerySet.delete() would wrap it in a transaction of its own (BEGIN
            # and COMMIT, two more round trips per Graph request) for a cascade it has none of.
            MailboxLease.objects.filter(pk=lease_id)._raw_delete(MailboxLease.objects.db)
        except DatabaseError as exc:
            raise StoreUnavailable(str(exc)) from exc

    def reserve_slot(
        self, keys: Sequence[tuple[str, float]], *, now: datetime, not_before: datetime
    ) -> datetime:
        with transaction.atomic():
            rows = [(_budget_row(key, now), interval) for key, interval in keys]
            slot = max(
                [now, not_before]
                + [row.next_slot_at for row, _ in rows]
                + [row.blocked_until for row, _ in rows if row.blocked_until]
            )
            for row, interval in rows:
                SendBudget.objects.filter(key=row.key).update(
                    next_slot_at=slot + timedelta(seconds=interval), updated_at=now
                )
        return slot

    def reserve_window_slot(
        self, key: str, *, limit: int, window: timedelta, now: datetime
    ) -> datetime:
        with transaction.atomic():
            row = _budget_row(key, now)  # its lock serialises the reservations of every process
            nth_latest = (
                BudgetSlot.objects.filter(key=key)
                .order_by("-at")
                .values_list("at", flat=True)[limit - 1 : limit]
                .first()
            )
            slot = max([now] + ([nth_latest + window] if nth_latest else []))
            if row.blocked_until and row.blocked_until > slot:
                slot = row.blocked_until
            BudgetSlot.objects.create(key=key, at=slot)
            if row.next_slot_at < now - window:  # prune at most once a window
                BudgetSlot.objects.filter(key=key, at__lt=now - window).delete()
                SendBudget.objects.filter(key=key).update(next_slot_at=now)
        return slot
