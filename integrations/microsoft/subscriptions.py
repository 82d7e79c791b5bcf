"""Webhook subscriptions: set up / reconcile, renew at half-life, reauthorize, recreate,
delete, clean up (both ways), and lifecycle events ("Create subscription", "Reduce missing
subscriptions and change notifications").

Public functions that an operator triggers take an `Actor`, check its role before any work
and write one AuditEvent with the effect. Graph calls are never made inside a database
transaction: each Graph operation is followed by a short transaction that stores its result,
so a crash leaves at worst an orphan in Graph, which `cleanup()` finds by listing.

One module, over 1,000 lines, on purpose: reconcile, the one-subscription actions, lifecycle
handling and the maintenance schedule all go through the same few Graph operations (`_create`,
`_renew`, `_reauthorize`, `_recreate`, `lapse`) and their pacing, whose ordering rules (no Graph
call in a transaction, the state written right after each call) are the module's invariant;
split apart, those private steps would become a public API other modules could misuse.
Monitored users live in monitored_users.py.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.utils import timezone

from integrations import graph
from integrations.graph import throttle
from integrations.graph.errors import Conflict, GraphError, NotFound
from integrations.graph.kinds import KINDS, parse_graph_datetime
from integrations.microsoft import sync
from integrations.microsoft.models import (
    LifecycleEvent,
    MonitoredUser,
    ResourceKind,
    Subscription,
)
from integrations.microsoft.monitored_users import resolve_user
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.events.services import emit
from portal.jobs.runner import enqueue
from portal.lib import clock
from portal.lib.crypto import encrypt

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- the table


ENDPOINTS = ("mail", "teams", "lifecycle")
# clientState: random, URL-safe, 64 characters (Graph allows 128: "subscription resource type").
CLIENT_STATE_BYTES = 48


def webhook_url(endpoint: str) -> str:
    base = settings.WEBHOOK_BASE_URL or settings.PUBLIC_BASE_URL
    return f"{base.rstrip('/')}/api/webhooks/{endpoint}"


def renew_fraction() -> float:
    """Renew once this fraction of a subscription's lifetime has passed (default: half)."""
    return float(settings.SUBSCRIPTION_RENEW_FRACTION)


def renewal_due_at(sub: Subscription) -> datetime | None:
    if sub.expiration is None or sub.lifetime_started_at is None:
        return None
    return sub.lifetime_started_at + (sub.expiration - sub.lifetime_started_at) * renew_fraction()


def renewal_due(sub: Subscription, now: datetime | None = None) -> bool:
    due = renewal_due_at(sub)
    return due is not None and (now or clock.now()) >= due


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --------------------------------------------------------------------------- summaries


@dataclass
class Summary:
    """What a setup/cleanup/maintenance run did (or, dry run, would do)."""

    action: str
    dry_run: bool = False
    created: list[str] = field(default_factory=list)
    renewed: list[str] = field(default_factory=list)
    recreated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    rows_deleted: list[str] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    # Operations not started before the run's deadline: the next run (queued at once) does them.
    left: int = 0

    COUNTED = (
        "created",
        "renewed",
        "recreated",
        "unchanged",
        "deleted",
        "rows_deleted",
        "resolved",
        "skipped",
        "failed",
    )

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.COUNTED}

    @property
    def changed(self) -> bool:
        return any(
            getattr(self, n)
            for n in ("created", "renewed", "recreated", "deleted", "rows_deleted", "resolved")
        )

    def lines(self) -> list[str]:
        verb = "would be " if self.dry_run else ""
        out = []
        for name in self.COUNTED:
            for entry in getattr(self, name):
                out.append(f"{verb}{name.replace('_', ' ')}: {entry}")
        counts = ", ".join(
            f"{n} {name.replace('_', ' ')}" for name, n in self.counts().items() if n
        )
        prefix = "Dry run: " if self.dry_run else ""
        if self.left:
            counts += f"{', ' if counts else ''}{self.left} left for the next run"
        out.append(f"{prefix}{self.action}: {counts or 'nothing to do'}")
        return out


def _label(user: MonitoredUser | None, kind: str, graph_id: str | None = None) -> str:
    who = str(user) if user is not None else "(whole tenant)"
    return f"{who} {kind}" + (f" [{graph_id}]" if graph_id else "")


# --------------------------------------------------------------------------- Graph operations
# These do the work without role checks; the public functions below and the jobs call them.


_CONFLICT_ID = re.compile(r"Subscription Id ([0-9A-Za-z-]+) already exists")
# Graph's answer to a lifetime above the resource's maximum ("Subscription expiration can
# only be 4230 minutes in the future.").
_ALLOWED_MINUTES = re.compile(r"expiration can only be (\d+) minutes in the future", re.I)
# Without a figure in the refusal, a Teams subscription asks for an hour: every Teams
# resource allows at least that ("subscription resource type", maximum length per resource).
TEAMS_FALLBACK_MINUTES = 60


def allowed_lifetime(exc: GraphError, kind: str, asked: int) -> int | None:
    """The lifetime (minutes) to ask again with when Graph refused `asked` minutes as too
    long; None when the error is something else."""
    if exc.status != 400 or "expiration" not in exc.message.lower():
        return None
    match = _ALLOWED_MINUTES.search(exc.message)
    if match:
        # A minute below Graph's figure, so clock skew cannot push the retry over it.
        allowed = int(match.group(1)) - 1
    elif kind == ResourceKind.CHAT_MESSAGES:
        allowed = TEAMS_FALLBACK_MINUTES
    else:
        return None
    return allowed if 0 < allowed < asked else None


def _within_allowed_lifetime(
    kind: str, send: Callable[[datetime, int], dict[str, Any]]
) -> tuple[dict[str, Any], datetime]:
    """send(started, minutes) with the kind's lifetime; once more with the lifetime Graph
    allows if it refused that one. Returns Graph's answer and when the lifetime started."""
    minutes = KINDS[kind].lifetime_minutes
    started = clock.now()
    try:
        return send(started, minutes), started
    except GraphError as exc:
        allowed = allowed_lifetime(exc, kind, minutes)
        if allowed is None:
            raise
        logger.warning(
            "Graph refused a %s-minute %s subscription; asking for %s minutes",
            minutes,
            kind,
            allowed,
        )
        started = clock.now()
        return send(started, allowed), started


def _create(
    user: MonitoredUser | None, kind: str, *, replaces: Subscription | None = None
) -> Subscription:
    """POST /subscriptions (Graph runs the validation handshake against our receiver). No
    user: the tenant-wide chat subscription."""
    spec = KINDS[kind]
    client_state = secrets.token_urlsafe(CLIENT_STATE_BYTES)
    sub = Subscription.objects.create(
        monitored_user=user,
        kind=kind,
        resource=(
            spec.resource.format(id=user.graph_id)
            if user is not None
            else Subscription.TENANT_CHATS_RESOURCE
        ),
        change_types=spec.change_types,
        notification_url=webhook_url(spec.endpoint),
        # Always set: Teams requires it above 1 h, and for mail it brings `missed` and
        # `subscriptionRemoved`; it cannot be added later ("Reduce missing subscriptions and change
        # notifications").
        lifecycle_url=webhook_url("lifecycle"),
        client_state_encrypted=encrypt(client_state),
        state=Subscription.State.CREATING,
    )
    body = {
        "changeType": sub.change_types,
        "notificationUrl": sub.notification_url,
        "lifecycleNotificationUrl": sub.lifecycle_url,
        "resource": sub.resource,
        "clientState": client_state,
        "latestSupportedTlsVersion": "v1_2",
    }

    def post(started: datetime, minutes: int) -> dict[str, Any]:
        body["expirationDateTime"] = _iso(started + timedelta(minutes=minutes))
        try:
            # Repeatable: a second create of the same resource is answered 409 below.
            paced()
            return graph.post("/subscriptions", json=body, repeatable=True, windows=OPS_WINDOWS)
        except Conflict as exc:
            # Graph already has one for this resource that we lost track of (its clientState
            # is unknown to us, so we could not verify its notifications): replace it.
            match = _CONFLICT_ID.search(exc.message)
            if not match:
                raise
            logger.warning("Subscription %s already existed in Graph; replacing it", match.group(1))
            paced()
            graph.delete(f"/subscriptions/{match.group(1)}", windows=OPS_WINDOWS)
            paced()
            return graph.post("/subscriptions", json=body, repeatable=True, windows=OPS_WINDOWS)

    try:
        data, started = _within_allowed_lifetime(kind, post)
    except GraphError as exc:
        Subscription.objects.filter(pk=sub.pk).update(
            state=Subscription.State.FAILED,
            last_error=str(exc)[:2000],
            last_error_at=timezone.now(),
        )
        raise
    with transaction.atomic():
        sub.graph_id = str(data["id"])
        sub.expiration = parse_graph_datetime(data.get("expirationDateTime"))
        sub.lifetime_started_at = started
        sub.state = Subscription.State.ACTIVE
        sub.last_error = ""
        sub.save(
            update_fields=["graph_id", "expiration", "lifetime_started_at", "state", "last_error"]
        )
        if replaces is not None:
            Subscription.objects.filter(pk=replaces.pk).update(
                state=Subscription.State.REMOVED, replaced_by=sub
            )
        # Rows of earlier failed attempts for this user-and-kind have nothing in Graph.
        Subscription.objects.filter(
            monitored_user=user,
            kind=kind,
            graph_id__isnull=True,
            state__in=[Subscription.State.FAILED, Subscription.State.CREATING],
        ).exclude(pk=sub.pk).delete()
    logger.info("Subscription %s created for %s", sub.graph_id, _label(user, kind))
    return sub


def _note_failure(sub: Subscription, exc: GraphError) -> None:
    """Keep Graph's answer on the row; a 404 means Graph no longer has the subscription."""
    fields: dict[str, Any] = {"last_error": str(exc)[:2000], "last_error_at": timezone.now()}
    with transaction.atomic():
        if isinstance(exc, NotFound):
            lapse(sub, "Graph no longer has the subscription")
            fields["state"] = Subscription.State.REMOVED
        Subscription.objects.filter(pk=sub.pk).update(**fields)


def lapse(sub: Subscription, reason: str) -> bool:
    """An active subscription is no longer live in Graph (it expired without renewal, Graph
    removed it or answers 404): mark it removed and emit `subscription.lapsed`, in one
    transaction. The UPDATE is conditional on the row still being active, so whichever path
    notices first (the schedule, a lifecycle event, a failed renewal, cleanup) emits the one
    event and the others change nothing. Returns whether this call did."""
    with transaction.atomic():
        lapsed = Subscription.objects.filter(pk=sub.pk, state=Subscription.State.ACTIVE).update(
            state=Subscription.State.REMOVED, missing_since=timezone.now()
        )
        if lapsed:
            emit_lapsed(sub, reason)
    sub.state = Subscription.State.REMOVED
    return bool(lapsed)


def lapse_expired(now: datetime | None = None) -> int:
    """Active subscriptions past their expiry (not renewed in time: Graph has deleted them)
    lapse, whether or not Graph can be reached right now. The maintenance schedule calls
    this before reconciling, which then recreates them."""
    now = now or timezone.now()
    expired = Subscription.objects.select_related("monitored_user").filter(
        state=Subscription.State.ACTIVE, expiration__lte=now
    )
    return sum(
        lapse(sub, f"Expired at {sub.expiration:%Y-%m-%d %H:%M} UTC without renewal")
        for sub in expired
    )


def emit_lapsed(sub: Subscription, reason: str) -> None:
    """The subscription.lapsed event (in the caller's transaction; `lapse` decides when)."""
    user = sub.monitored_user
    emit(
        "subscription.lapsed",
        {
            "subscription": sub.graph_id,
            "resourceType": sub.kind,
            "reason": reason,
            "user": {"id": user.graph_id, "upn": user.upn or user.identifier} if user else None,
            "expiration": sub.expiration.isoformat() if sub.expiration else None,
        },
        subject=user.graph_id if user else "",
    )


def _renew(sub: Subscription) -> Subscription:
    """PATCH a new expirationDateTime (renews and reauthorizes: "Update subscription")."""

    def send(started: datetime, minutes: int) -> dict[str, Any]:
        paced()
        return graph.patch(
            f"/subscriptions/{sub.graph_id}",
            json={"expirationDateTime": _iso(started + timedelta(minutes=minutes))},
            repeatable=True,  # it sets an absolute time
            windows=OPS_WINDOWS,
        )

    try:
        data, started = _within_allowed_lifetime(sub.kind, send)
    except GraphError as exc:
        _note_failure(sub, exc)
        raise
    sub.expiration = parse_graph_datetime(data.get("expirationDateTime")) or sub.expiration
    sub.lifetime_started_at = started
    sub.last_renewed_at = started
    sub.last_error = ""
    sub.save(update_fields=["expiration", "lifetime_started_at", "last_renewed_at", "last_error"])
    logger.info("Subscription %s renewed until %s", sub.graph_id, sub.expiration)
    return sub


def _reauthorize(sub: Subscription) -> Subscription:
    try:
        graph.post(f"/subscriptions/{sub.graph_id}/reauthorize", repeatable=True)
    except GraphError as exc:
        _note_failure(sub, exc)
        raise
    sub.last_reauthorized_at = timezone.now()
    sub.save(update_fields=["last_reauthorized_at"])
    return sub


def _delete_remote(graph_id: str) -> bool:
    """DELETE in Graph; False when Graph did not have it (already gone is fine)."""
    try:
        paced()
        graph.delete(f"/subscriptions/{graph_id}", windows=OPS_WINDOWS)
    except NotFound:
        return False
    return True


def _recreate(sub: Subscription) -> Subscription:
    """Replace a subscription: delete it in Graph if still there, create a new one, then
    catch up with a delta sync (no notifications arrived in between)."""
    if sub.monitored_user is None and not sub.tenant_wide:
        raise ValueError("This subscription belongs to no monitored user; delete it instead.")
    if sub.graph_id and sub.state == Subscription.State.ACTIVE:
        _delete_remote(sub.graph_id)
    new = _create(sub.monitored_user, sub.kind, replaces=sub)
    return new


def _catch_up(sub: Subscription, trigger: str) -> Any:
    if sub.monitored_user_id is None:
        return None
    return sync.request_delta(sub.monitored_user_id, sub.kind, trigger=trigger)


# Graph allows about 25 list requests per 20 s per app and tenant ("Microsoft Graph
# service-specific throttling limits", subscription service): every process pages through
# the list at most 20 pages per 20 s together, leaving room for an operator's comparison.
LIST_PAGES_PER_SECOND = 1.0
LIST_BUDGET_KEY = "graph-subscriptions-list"
# Creations, renewals and deletions: Graph allows 500 per 20 s per app and tenant (same page);
# every process takes its slots from one shared window (GRAPH_SUBSCRIPTION_OPS_PER_20_SECONDS),
# and a 429 on one of them holds every process back for its Retry-After.
OPS_BUDGET_KEY = "graph-subscriptions-ops"
OPS_WINDOW_SECONDS = 20.0
OPS_WINDOWS = (OPS_BUDGET_KEY,)


def paced() -> None:
    """Wait for this request's slot in the subscriptions API's write budget."""
    throttle.wait_for_window_slot(
        OPS_BUDGET_KEY, int(settings.GRAPH_SUBSCRIPTION_OPS_PER_20_SECONDS), OPS_WINDOW_SECONDS
    )


def list_remote() -> list[dict[str, Any]]:
    """GET /subscriptions: with an app token, every subscription this app created ("List
    subscriptions"), page by page, each page in a shared slot so that the list stays within
    Graph's budget."""
    items: list[dict[str, Any]] = []
    url: str | None = "/subscriptions"
    while url:
        throttle.wait_for_slot(LIST_BUDGET_KEY, LIST_PAGES_PER_SECOND)
        page = graph.get(url) or {}
        items.extend(page.get("value") or [])
        url = page.get("@odata.nextLink")
    return items


def ours(remote: dict[str, Any]) -> bool:
    """A Graph subscription pointing at this deployment's receiver (other deployments of the
    same app registration are left alone)."""
    prefix = webhook_url("")
    return str(remote.get("notificationUrl") or "").startswith(prefix)


# --------------------------------------------------------------------------- reconcile


@dataclass(frozen=True)
class ChatMode:
    """How chats are watched: one tenant-wide subscription, or one per user."""

    tenant_wide: bool
    watching: int  # monitored users watching chats
    threshold: int


def chat_mode() -> ChatMode:
    watching = (
        MonitoredUser.objects.filter(is_active=True, watch_chat_messages=True)
        .exclude(graph_id="")
        .count()
    )
    threshold = int(settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD)
    return ChatMode(watching >= threshold, watching, threshold)


def tenant_chats_wanted(users: list[MonitoredUser] | None = None) -> bool:
    """Whether chats are watched with the one tenant-wide subscription: from
    TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD monitored users watching chats on (Teams allows
    10,000 subscriptions per organisation across all apps: "subscription resource type")."""
    if users is None:
        return chat_mode().tenant_wide
    count = sum(
        1 for u in users if u.is_active and u.graph_id and ResourceKind.CHAT_MESSAGES in u.kinds
    )
    return count >= int(settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD)


@dataclass
class _Operation:
    bucket: str
    label: str
    run: Callable[[], Any]


# One set-up or maintenance run at a time, across every worker and node: at fleet size a run
# takes minutes (10,000 creations take 400 s at Graph's budget), longer than the schedule's
# period, and two runs would both create what is missing.
RUN_LOCK_ID = 0x46475052  # a PostgreSQL advisory lock key of our own


@contextmanager
def _only_run() -> Iterator[bool]:
    """Whether this run may go ahead: it holds the advisory lock until it ends (a crashed
    worker's connection closes and frees it). SQLite has one writer anyway: always yes."""
    if db_connection.vendor != "postgresql":
        yield True
        return
    with db_connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [RUN_LOCK_ID])
        taken = bool(cursor.fetchone()[0])
    try:
        yield taken
    finally:
        if taken:
            with db_connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [RUN_LOCK_ID])


def _reconcile(
    summary: Summary,
    *,
    create_missing: bool,
    delete_unwanted: bool,
    deadline: float | None = None,
) -> None:
    if summary.dry_run:
        _reconcile_now(summary, create_missing=create_missing, delete_unwanted=delete_unwanted)
        return
    with _only_run() as alone:
        if not alone:
            summary.skipped.append("another set-up or maintenance run is in progress")
            return
        _reconcile_now(
            summary,
            create_missing=create_missing,
            delete_unwanted=delete_unwanted,
            deadline=deadline,
        )


def _reconcile_now(
    summary: Summary,
    *,
    create_missing: bool,
    delete_unwanted: bool,
    deadline: float | None = None,
) -> None:
    dry = summary.dry_run
    users = list(MonitoredUser.objects.all())
    for user in users:
        if user.is_active and not user.graph_id:
            if dry:
                summary.skipped.append(f"{user}: Graph id not resolved yet")
                continue
            try:
                if resolve_user(user):
                    summary.resolved.append(str(user))
                else:
                    summary.failed.append(f"{user}: {user.last_error}")
            except GraphError as exc:
                summary.failed.append(f"{user}: {exc}")
    remote = {r["id"]: r for r in list_remote()}
    rows: dict[tuple[int | None, str], list[Subscription]] = {}
    tenant_rows: list[Subscription] = []
    for row in Subscription.objects.select_related("monitored_user").exclude(
        state=Subscription.State.REMOVED, replaced_by__isnull=False
    ):
        if row.tenant_wide:
            tenant_rows.append(row)
        else:
            rows.setdefault((row.monitored_user_id, row.kind), []).append(row)
    tenant_chats = tenant_chats_wanted(users)
    # With the tenant-wide chat subscription wanted, it comes first and the per-user ones go
    # after it (no moment without either); without it, the per-user ones come first.
    first: list[_Operation] = []
    ops: list[_Operation] = []
    last: list[_Operation] = []
    tenant_ops = _reconcile_one(
        None,
        ResourceKind.CHAT_MESSAGES,
        tenant_rows,
        remote,
        wanted=tenant_chats,
        create_missing=create_missing,
        delete_unwanted=True,
        summary=summary,
    )
    (first if tenant_chats else last).extend(tenant_ops)
    handover: list[_Operation] = []  # per-user chat subscriptions the tenant-wide one replaces
    for user in users:
        for kind in KINDS:
            wanted = user.is_active and bool(user.graph_id) and kind in user.kinds
            replaced = kind == ResourceKind.CHAT_MESSAGES and tenant_chats
            (handover if replaced else ops).extend(
                _reconcile_one(
                    user,
                    kind,
                    rows.get((user.pk, kind), []),
                    remote,
                    wanted=wanted and not replaced,
                    create_missing=create_missing,
                    delete_unwanted=delete_unwanted or replaced,
                    summary=summary,
                )
            )
    failed = len(summary.failed)
    _run_all(summary, first, deadline)
    if len(summary.failed) == failed:  # the tenant-wide one is there (or not wanted)
        _run_all(summary, handover, deadline)
    _schedule_baselines(ops)
    _run_all(summary, ops, deadline)
    if last and len(summary.failed) == failed and not summary.left:
        _run_all(summary, last, deadline)  # every per-user one is there: the tenant-wide goes


def _reconcile_one(
    user: MonitoredUser | None,
    kind: str,
    mine: list[Subscription],
    remote: dict[str, Any],
    *,
    wanted: bool,
    create_missing: bool,
    delete_unwanted: bool,
    summary: Summary,
) -> list[_Operation]:
    """What one user-and-kind (or the tenant-wide chats, user None) needs done."""
    out: list[_Operation] = []
    live = sorted(
        (s for s in mine if s.state == Subscription.State.ACTIVE and s.graph_id in remote),
        key=lambda s: s.pk,
        reverse=True,
    )
    if not wanted:
        if delete_unwanted:
            for sub in live:
                out.append(
                    _Operation(
                        "deleted",
                        _label(user, kind, sub.graph_id),
                        partial(_delete_and_forget, sub),
                    )
                )
        return out
    if live:
        sub = live[0]
        if sub.notification_url != webhook_url(KINDS[kind].endpoint):
            # PUBLIC_BASE_URL changed; the lifecycle URL cannot be PATCHed: recreate.
            out.append(
                _Operation(
                    "recreated",
                    _label(user, kind, sub.graph_id),
                    partial(_recreate_and_catch_up, sub, "setup:url-changed"),
                )
            )
        elif renewal_due(sub):
            out.append(
                _Operation("renewed", _label(user, kind, sub.graph_id), partial(_renew, sub))
            )
        else:
            summary.unchanged.append(_label(user, kind, sub.graph_id))
        return out
    vanished = [
        s
        for s in mine
        if s.graph_id and s.state in (Subscription.State.ACTIVE, Subscription.State.REMOVED)
    ]
    if vanished:
        old = max(vanished, key=lambda s: s.pk)
        # Graph no longer has it (expired, or removed): new subscription + catch-up.
        out.append(
            _Operation(
                "recreated",
                _label(user, kind, old.graph_id),
                partial(_replace_vanished, old),
            )
        )
    elif create_missing:
        out.append(
            _Operation(
                "created",
                _label(user, kind),
                partial(_create_and_sync, user, kind),
            )
        )
    return out


def _schedule_baselines(operations: list[_Operation]) -> None:
    """In a run of more writes than one window of the budget (a mass set-up), each new
    subscription's baseline sync waits until about when the run's last write is due: Graph's
    budget sets the run's pace, and syncs run meanwhile would only take the CPU the
    creations need. A notification for the user runs its sync at once all the same."""
    budget = int(settings.GRAPH_SUBSCRIPTION_OPS_PER_20_SECONDS)
    if len(operations) <= budget:
        return
    per_write = OPS_WINDOW_SECONDS / budget
    for position, op in enumerate(operations):
        if op.bucket == "created" and isinstance(op.run, partial):
            op.run = partial(op.run, sync_after=(len(operations) - position) * per_write)


def _run_all(summary: Summary, operations: list[_Operation], deadline: float | None) -> None:
    """Run the operations, SUBSCRIPTION_SETUP_CONCURRENCY at a time (each waits for its slot
    in the subscriptions API's budget, so more at once only hide each one's latency); the ones
    not started by `deadline` (time.monotonic()) are counted as left for the next run."""
    if summary.dry_run:
        for op in operations:
            getattr(summary, op.bucket).append(op.label)
        return
    queue = list(reversed(operations))
    lock = threading.Lock()

    def take() -> _Operation | None:
        with lock:
            if not queue:
                return None
            if deadline is not None and time.monotonic() > deadline:
                summary.left += len(queue)
                queue.clear()
                return None
            return queue.pop()

    def work(own_connection: bool) -> None:
        try:
            while (op := take()) is not None:
                _do(summary, op.bucket, op.label, op.run)
        finally:
            if own_connection:
                db_connection.close()

    threads = min(int(settings.SUBSCRIPTION_SETUP_CONCURRENCY), len(operations))
    if threads <= 1 or db_connection.in_atomic_block:
        work(own_connection=False)
        return
    helpers = [
        threading.Thread(target=work, args=(True,), name=f"subscriptions-{n}", daemon=True)
        for n in range(threads - 1)
    ]
    for helper in helpers:
        helper.start()
    work(own_connection=False)
    for helper in helpers:
        helper.join()


def _do(summary: Summary, bucket: str, label: str, operation: Any) -> None:
    if summary.dry_run:
        getattr(summary, bucket).append(label)
        return
    try:
        operation()
    except (GraphError, ValueError) as exc:
        summary.failed.append(
            f"{label}: {bucket[:-1] if bucket.endswith('d') else bucket} failed: {exc}"
        )
        logger.warning("Subscription %s: %s failed: %s", label, bucket, exc)
    else:
        getattr(summary, bucket).append(label)


def _create_and_sync(
    user: MonitoredUser | None, kind: str, *, sync_after: float = 0.0
) -> Subscription:
    sub = _create(user, kind)
    if sub.monitored_user_id is not None:
        # The baseline (or catch-up) delta round; a notification for it runs it at once.
        sync.request_delta(
            sub.monitored_user_id,
            sub.kind,
            trigger="subscription:created",
            delay_seconds=sync_after or None,
        )
    return sub


def _recreate_and_catch_up(sub: Subscription, trigger: str) -> Subscription:
    new = _recreate(sub)
    _catch_up(new, trigger)
    return new


def _replace_vanished(old: Subscription) -> Subscription:
    lapse(old, "Graph no longer has the subscription (expired or removed)")
    Subscription.objects.filter(pk=old.pk).update(state=Subscription.State.REMOVED)
    return _recreate_and_catch_up(old, "subscription:vanished")


def _delete_and_forget(sub: Subscription) -> None:
    if sub.graph_id:
        _delete_remote(sub.graph_id)
    Subscription.objects.filter(pk=sub.pk).delete()


def _audit(actor: Actor, action: str, summary: Summary, *, target_id: Any = "") -> None:
    with transaction.atomic():
        record(
            action,
            actor=actor,
            target_type="subscription",
            target_id=target_id,
            params={
                "dry_run": summary.dry_run,
                **summary.counts(),
                "failures": summary.failed[:20],
            },
            outcome="failure" if summary.failed else "success",
        )


def setup(actor: Actor, *, dry_run: bool = False, deadline: float | None = None) -> Summary:
    """The runbook's `setup:webhooks`: make Graph and the database match the monitored users.

    Creates missing subscriptions (the handshake must succeed), renews those past half-life,
    recreates expired or removed ones (then catches up with delta), deletes ones no longer
    wanted. Idempotent. One audit event for the whole run.
    """
    require(actor, "setup_subscriptions", action="webhooks.setup", target_type="subscription")
    summary = Summary("setup_webhooks", dry_run=dry_run)
    try:
        _reconcile(summary, create_missing=True, delete_unwanted=True, deadline=deadline)
    except GraphError as exc:  # listing failed: nothing can be reconciled
        summary.failed.append(f"listing Graph subscriptions failed: {exc}")
    _audit(actor, "webhooks.setup", summary)
    if summary.left:
        continue_maintenance()
    return summary


def maintain(deadline: float | None = None) -> Summary:
    """The schedule: renew due subscriptions, recreate vanished ones, create missing ones
    (and move chats between per-user and tenant-wide subscriptions at the threshold).

    Audited (as the system) only when it changed something or failed, so the log is not
    flooded with no-op runs. What the `deadline` (time.monotonic()) left undone is continued
    by a maintenance job queued at once.
    """
    summary = Summary("maintain_webhooks")
    lapse_expired()  # first, and in its own transactions: even when Graph is unreachable
    _reconcile(summary, create_missing=True, delete_unwanted=False, deadline=deadline)
    if summary.changed or summary.failed:
        _audit(Actor.system("schedule:webhooks.maintain"), "webhooks.maintain", summary)
    if summary.left:
        continue_maintenance()
    return summary


def cleanup(actor: Actor, *, dry_run: bool = False) -> Summary:
    """The runbook's `webhooks:cleanup`: delete expired rows, Graph subscriptions of this
    deployment that the database does not know (orphans), and rows Graph no longer has."""
    require(actor, "cleanup_subscriptions", action="webhooks.cleanup", target_type="subscription")
    summary = Summary("cleanup_webhooks", dry_run=dry_run)
    now = clock.now()
    try:
        remote = {r["id"]: r for r in list_remote()}
    except GraphError as exc:
        summary.failed.append(f"listing Graph subscriptions failed: {exc}")
        _audit(actor, "webhooks.cleanup", summary)
        return summary
    known = set(
        Subscription.objects.exclude(graph_id__isnull=True).values_list("graph_id", flat=True)
    )
    for graph_id, item in remote.items():
        if graph_id in known:
            continue
        if not ours(item):
            summary.skipped.append(f"{graph_id}: notificationUrl of another deployment")
            continue
        _do(
            summary,
            "deleted",
            f"orphan {graph_id} ({item.get('resource')})",
            lambda graph_id=graph_id: _delete_remote(graph_id),
        )
    for sub in Subscription.objects.select_related("monitored_user"):
        label = _label(sub.monitored_user, sub.kind, sub.graph_id)
        reason = ""
        if sub.expiration is not None and sub.expiration <= now:
            reason = "expired"
        elif (
            sub.graph_id
            and sub.graph_id not in remote
            and sub.state in (Subscription.State.ACTIVE, Subscription.State.REMOVED)
        ):
            reason = "not in Graph"
        elif sub.state == Subscription.State.FAILED:
            reason = "creation failed"
        elif sub.state == Subscription.State.CREATING and sub.created_at < now - timedelta(hours=1):
            reason = "creation never confirmed"
        if not reason:
            continue
        summary.rows_deleted.append(f"{label}: {reason}")
        if not dry_run:
            with transaction.atomic():
                if reason in ("expired", "not in Graph"):
                    lapse(sub, f"Cleaned up: {reason}")
                Subscription.objects.filter(pk=sub.pk).delete()
    _audit(actor, "webhooks.cleanup", summary)
    return summary


# --------------------------------------------------------------------------- one subscription


def _get(subscription_id: int) -> Subscription:
    return Subscription.objects.select_related("monitored_user").get(pk=subscription_id)


@contextmanager
def _failure_audited(action: str, actor: Actor, subscription_id: int) -> Iterator[None]:
    """A Graph failure still changed the row (state, last_error): the attempt is audited."""
    try:
        yield
    except GraphError as exc:
        record(
            action,
            actor=actor,
            target_type="subscription",
            target_id=subscription_id,
            outcome="failure",
            reason=str(exc)[:500],
        )
        raise


def renew(actor: Actor, subscription_id: int) -> Subscription:
    require(
        actor,
        "renew_subscription",
        action="subscription.renew",
        target_type="subscription",
        target_id=subscription_id,
    )
    with _failure_audited("subscription.renew", actor, subscription_id):
        sub = _renew(_get(subscription_id))
    with transaction.atomic():
        record(
            "subscription.renew",
            actor=actor,
            target_type="subscription",
            target_id=sub.pk,
            params={"graph_id": sub.graph_id, "expiration": str(sub.expiration)},
        )
    return sub


def recreate(actor: Actor, subscription_id: int) -> Subscription:
    require(
        actor,
        "recreate_subscription",
        action="subscription.recreate",
        target_type="subscription",
        target_id=subscription_id,
    )
    old = _get(subscription_id)
    with _failure_audited("subscription.recreate", actor, subscription_id):
        new = _recreate_and_catch_up(old, "operator:recreate")
    with transaction.atomic():
        record(
            "subscription.recreate",
            actor=actor,
            target_type="subscription",
            target_id=old.pk,
            params={"old": old.graph_id, "new": new.graph_id},
        )
    return new


def delete(actor: Actor, subscription_id: int) -> None:
    """Delete in Graph and forget it (setup_webhooks recreates it while the user is
    monitored)."""
    require(
        actor,
        "delete_subscription",
        action="subscription.delete",
        target_type="subscription",
        target_id=subscription_id,
    )
    sub = _get(subscription_id)
    with _failure_audited("subscription.delete", actor, subscription_id):
        existed = _delete_remote(sub.graph_id) if sub.graph_id else False
    with transaction.atomic():
        Subscription.objects.filter(pk=sub.pk).delete()
        record(
            "subscription.delete",
            actor=actor,
            target_type="subscription",
            target_id=subscription_id,
            params={"graph_id": sub.graph_id, "existed_in_graph": existed},
        )


# --------------------------------------------------------------------------- lifecycle events


def handle_lifecycle_event(event_id: int) -> str:
    """Act on one stored lifecycle event. Safe to run twice (the outcome is stored, and a
    subscription already replaced is not replaced again)."""
    event = LifecycleEvent.objects.get(pk=event_id)
    if event.status != LifecycleEvent.Status.RECEIVED:
        return event.status
    sub = (
        Subscription.objects.select_related("monitored_user")
        .filter(pk=event.subscription_id)
        .first()
        if event.subscription_id
        else None
    )
    followup = None
    status = LifecycleEvent.Status.HANDLED
    if sub is None:
        status, outcome = LifecycleEvent.Status.IGNORED, "subscription no longer known"
    elif event.event == LifecycleEvent.Event.REAUTHORIZATION_REQUIRED:
        if sub.state != Subscription.State.ACTIVE:
            status, outcome = LifecycleEvent.Status.IGNORED, f"subscription is {sub.state}"
        else:
            try:
                if renewal_due(sub):
                    _renew(sub)
                    outcome = "renewed (past half-life; renewal also reauthorizes)"
                else:
                    _reauthorize(sub)
                    outcome = "reauthorized"
            except NotFound:
                new = _recreate(sub)
                followup = _catch_up(new, "lifecycle:reauthorize-recreated")
                outcome = f"Graph no longer had it: recreated as {new.graph_id}"
                _system_audit("subscription.recreate", sub, new, event.event)
            else:
                # Notifications may have paused before we reauthorized: catch up.
                followup = _catch_up(sub, "lifecycle:reauthorizationRequired")
    elif event.event == LifecycleEvent.Event.SUBSCRIPTION_REMOVED:
        current = sub
        if sub.replaced_by_id is None:
            with transaction.atomic():
                lapse(sub, "Graph removed it (lifecycle event subscriptionRemoved)")
                Subscription.objects.filter(pk=sub.pk).update(state=Subscription.State.REMOVED)
            if sub.monitored_user is None and not sub.tenant_wide:
                # Its user was deleted: there is nobody to watch, so nothing to recreate.
                outcome = "removed; it belongs to no monitored user, so it is not recreated"
            else:
                current = _create(sub.monitored_user, sub.kind, replaces=sub)
                outcome = f"recreated as {current.graph_id}"
                _system_audit("subscription.recreate", sub, current, event.event)
        else:
            outcome = "already replaced"
        followup = _catch_up(current, "lifecycle:subscriptionRemoved")
    elif event.event == LifecycleEvent.Event.MISSED:
        # A delta round from the stored token returns every change since the last round,
        # the missed ones included; a full resync would re-read the whole mailbox for nothing.
        followup = _catch_up(sub, "lifecycle:missed")
        outcome = "delta resync requested"
    else:
        status, outcome = LifecycleEvent.Status.IGNORED, f"unknown event {event.event!r}"
    LifecycleEvent.objects.filter(pk=event.pk, status=LifecycleEvent.Status.RECEIVED).update(
        status=status, outcome=outcome, handled_at=timezone.now(), followup_job=followup
    )
    # Graph is changing its subscriptions: compare with its list soon (others may be gone
    # without an event of their own).
    request_truth_check()
    logger.info(
        "Lifecycle event %s (%s) for %s: %s",
        event.pk,
        event.event,
        event.subscription_graph_id,
        outcome,
    )
    return status


def _system_audit(action: str, old: Subscription, new: Subscription, why: str) -> None:
    with transaction.atomic():
        record(
            action,
            actor=Actor.system("lifecycle"),
            target_type="subscription",
            target_id=old.pk,
            params={"old": old.graph_id, "new": new.graph_id, "reason": why},
        )


# --------------------------------------------------------------------------- schedule


# The schedule compares with Graph's list every MAINTENANCE_MINUTES (a subscription can
# vanish without a lifecycle event); lifecycle events ask for a comparison TRUTH_CHECK_DELAY
# seconds later, one per slot of that length however many events arrive (debounced).
MAINTENANCE_MINUTES = 5
TRUTH_CHECK_DELAY = 60


def enqueue_maintenance() -> int:
    """Schedule entry: one maintenance job per MAINTENANCE_MINUTES slot."""

    slot = int(clock.now().timestamp() // (MAINTENANCE_MINUTES * 60))
    job = enqueue(
        "graph.subscriptions_maintain",
        {},
        idempotency_key=f"graph.subs.maint:{slot}",
        created_by="schedule:webhooks.maintain",
    )
    return job.pk


# A set-up or maintenance run started by a job stops starting operations after this many
# seconds (the jobs' timeout is 280 s) and queues its continuation: 10,000 creations take
# 400 s at Graph's budget.
RUN_SECONDS = 200


def continue_maintenance() -> int:
    """Queue a maintenance run now, to do what a run left for lack of time."""
    job = enqueue(
        "graph.subscriptions_maintain",
        {},
        idempotency_key=f"graph.subs.more:{timezone.now().timestamp():.0f}",
        created_by="webhooks:continue",
    )
    return job.pk


def request_truth_check() -> int:
    """Compare with Graph's list (and repair) about a minute from now; debounced."""
    slot = int(clock.now().timestamp() // TRUTH_CHECK_DELAY)
    job = enqueue(
        "graph.subscriptions_maintain",
        {},
        idempotency_key=f"graph.subs.check:{slot}",
        created_by="lifecycle:truth-check",
        delay_seconds=TRUTH_CHECK_DELAY,
    )
    return job.pk
