"""Delta sync engine ("Use delta query to track changes in Microsoft Graph data"): one SyncState
per monitored user and kind.

A run claims the state with a lease (a conditional UPDATE, so two workers never run the
same user-and-kind at once), then follows the round page by page. Each page is applied and the
checkpoint (the next link, or the new delta link at the end) is stored in one transaction,
so a crash resumes on the page it was on and a replayed page is harmless (upserts by Graph
id). A run fetches at most SYNC_MAX_PAGES_PER_RUN pages, then hands the rest of the round to
a follow-up job: a huge mailbox takes turns with the others instead of holding a worker.

An expired token (410 / syncStateNotFound / resyncRequired) starts a full round at once,
recorded as an automatic reset; a full round ends with a sweep that marks items it did not
see as removed.

One module, over 600 lines, on purpose: the requests (`request_delta`, `mark_due`), the
operator actions (`delta_now`, `reset`, `full_sync`) and the engine (`run`) all write the same
SyncState fields under the engine's lease and coalescing rules (`queued_job_id`, `due_since`,
`reset_requested`); kept together, those rules are read in one place.
"""

from __future__ import annotations

import html
import logging
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, Count, F, OuterRef, Q, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from integrations import graph
from integrations.graph.errors import DeltaTokenExpired, GraphError
from integrations.graph.kinds import KINDS, parse_graph_datetime
from integrations.microsoft import probe
from integrations.microsoft.models import (
    MonitoredUser,
    ResourceKind,
    SyncedItem,
    SyncRun,
    SyncState,
)
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.services import record
from portal.events.services import emit, emit_many
from portal.jobs.models import Job
from portal.jobs.runner import (
    enqueue,
    enqueue_many,
    enqueue_once_each,
    release_now,
    worker_identity,
)
from portal.jobs.watchdog import worker_gone_here
from portal.lib import clock
from portal.lib.redaction import redact_text
from portal.lib.tracing import current_traceparent
from portal.runtime.registry import get

logger = logging.getLogger(__name__)

JOB_TYPE = "graph.sync_delta"
_RESET_CODES = {"syncstatenotfound", "resyncrequired"}
# The fields we keep of each item: enough for the console and for matching, no bodies.
KEEP: dict[str, tuple[str, ...]] = {
    ResourceKind.MESSAGES: (
        "subject",
        "from",
        "receivedDateTime",
        "lastModifiedDateTime",
        "isRead",
        "conversationId",
        "importance",
        "hasAttachments",
    ),
    ResourceKind.CHAT_MESSAGES: (
        "chatId",
        "from",
        "createdDateTime",
        "lastModifiedDateTime",
        "deletedDateTime",
        "messageType",
        "replyToId",
        "subject",
        "importance",
    ),
}
MAIL_SELECT = ",".join(KEEP[ResourceKind.MESSAGES])
_TAGS = re.compile(r"<[^>]+>")


class SyncBusy(Exception):
    """Another run holds this user-and-kind; the job layer retries shortly."""

    transient = True
    retry_after = 5.0


class LeaseLost(Exception):
    """The state was reset, or the lease expired and another run took over."""

    transient = True
    retry_after = 1.0


def page_size() -> int:
    return int(settings.SYNC_PAGE_SIZE)


def max_pages_per_run() -> int:
    return int(settings.SYNC_MAX_PAGES_PER_RUN)


def lease_duration() -> timedelta:
    # Longer than the job timeout, so a lease only outlives a run that really died.
    return timedelta(seconds=int(settings.SYNC_LEASE_SECONDS))


def initial_request(user: MonitoredUser, kind: str) -> tuple[str, dict[str, str] | None]:
    spec = KINDS[kind]
    path = spec.delta_path.format(id=user.graph_id)
    # Query options go on the first call only; they are encoded in the links.
    if kind == ResourceKind.MESSAGES:
        return path, {"$select": MAIL_SELECT}
    if spec.max_top is not None:
        return path, {"$top": str(min(page_size(), spec.max_top))}
    return path, None


def page_headers(kind: str) -> dict[str, str]:
    """Prefer: odata.maxpagesize where Graph honours it (mail); $top carries it elsewhere."""
    if KINDS[kind].max_top is not None:
        return {}
    return {"Prefer": f"odata.maxpagesize={page_size()}"}


# --------------------------------------------------------------------------- state and jobs


def ensure_state(monitored_user_id: int, kind: str) -> SyncState:
    state = SyncState.objects.filter(monitored_user_id=monitored_user_id, kind=kind).first()
    if state is not None:
        return state
    try:
        with transaction.atomic():
            return SyncState.objects.create(monitored_user_id=monitored_user_id, kind=kind)
    except IntegrityError:  # created concurrently
        return SyncState.objects.get(monitored_user_id=monitored_user_id, kind=kind)


def ensure_states(pairs: Iterable[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """The SyncState ids of (monitored user id, kind) pairs, creating the missing ones: one
    SELECT, and an INSERT … ON CONFLICT DO NOTHING when some are new (a concurrent creator
    wins quietly)."""
    wanted = set(pairs)

    def existing(keys: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
        rows = SyncState.objects.filter(monitored_user_id__in={user for user, _ in keys})
        return {
            (user, kind): pk
            for pk, user, kind in rows.values_list("pk", "monitored_user_id", "kind")
            if (user, kind) in keys
        }

    found = existing(wanted) if wanted else {}
    missing = wanted - found.keys()
    if missing:
        SyncState.objects.bulk_create(
            [SyncState(monitored_user_id=user, kind=kind) for user, kind in sorted(missing)],
            ignore_conflicts=True,
        )
        found.update(existing(missing))
    return found


@dataclass(frozen=True)
class DeltaRequest:
    """A request for a delta run of one user and kind (see request_deltas)."""

    monitored_user_id: int
    kind: str
    # The traceparent the run continues; None: the current span's.
    trace_context: str | None = None
    idempotency_key: str | None = None
    delay_seconds: float | None = None


def request_delta(
    monitored_user_id: int,
    kind: str,
    *,
    trigger: str,
    created_by: str = "",
    idempotency_key: str | None = None,
    delay_seconds: float | None = None,
) -> Job:
    """Enqueue a delta run for user-and-kind unless one is already waiting (coalescing);
    see request_deltas."""
    request = DeltaRequest(
        monitored_user_id, kind, idempotency_key=idempotency_key, delay_seconds=delay_seconds
    )
    jobs = request_deltas([request], trigger=trigger, created_by=created_by)
    return jobs[(monitored_user_id, kind)]


def request_deltas(
    requests: Sequence[DeltaRequest], *, trigger: str, created_by: str = ""
) -> dict[tuple[int, str], Job]:
    """Enqueue a delta run for each user-and-kind unless one is already waiting (coalescing),
    in one transaction; the job of each (monitored user id, kind).

    A job waiting for its first run, or retrying, absorbs the request: it will see every
    change made until it runs. A running job does not: it may be past the change already.
    A request that may not wait (a notification) cuts a delayed job's wait short (the
    interval's spread; bench/end_to_end found a reply waiting 19 s for the release sweep);
    a retry's backoff stands (a throttle, an error).

    The cost does not grow with the number of users in statements: the states are read and
    locked in one SELECT … FOR UPDATE (in id order, so concurrent callers never deadlock),
    the waiting jobs read in one, and the new jobs inserted in one (bench/scale: a storm
    spread over 1,000 users drained at ~150 rows/s when each user cost ten statements).
    Requests with an idempotency key (the interval schedule's, one per slot) are enqueued
    together too (runner.enqueue_once_each); one with a delay and no key alone.
    """
    state_ids = ensure_states((r.monitored_user_id, r.kind) for r in requests)
    jobs: dict[tuple[int, str], Job] = {}
    payload = {"trigger": trigger[:40]}
    created_by = created_by or f"sync:{trigger}"[:150]
    # No savepoint when the caller has a transaction (the drain does): nothing here recovers.
    with transaction.atomic(savepoint=False):
        # Row locks (PostgreSQL) / the write lock (SQLite IMMEDIATE): one enqueuer at a time.
        queued = dict(
            SyncState.objects.select_for_update()
            .filter(pk__in=sorted(state_ids.values()))
            .order_by("pk")
            .values_list("pk", "queued_job_id")
        )
        waiting = Job.objects.filter(
            pk__in=[job_id for job_id in queued.values() if job_id],
            status__in=(Job.Status.PENDING, Job.Status.RETRYING),
        ).in_bulk()
        new: dict[tuple[int, str], DeltaRequest] = {}
        keyed: dict[str, tuple[tuple[int, str], DeltaRequest]] = {}
        release: list[int] = []
        for request in requests:
            key = (request.monitored_user_id, request.kind)
            if key in jobs or key in new:
                continue  # asked twice in one call: one run
            state_id = state_ids[key]
            job = waiting.get(queued[state_id] or 0)
            if job is not None:
                if (
                    not request.delay_seconds
                    and job.status == Job.Status.PENDING
                    and job.dispatched_at is None
                ):
                    release.append(job.pk)
                jobs[key] = job
            elif request.idempotency_key:
                keyed[request.idempotency_key] = (key, request)
            elif request.delay_seconds:
                jobs[key] = enqueue(
                    JOB_TYPE,
                    {"state": state_id, **payload},
                    idempotency_key=request.idempotency_key,
                    delay_seconds=request.delay_seconds,
                    created_by=created_by,
                    trace_context=request.trace_context,
                )
            else:
                new[key] = request
        release_now(release)
        if keyed:
            found = enqueue_once_each(
                JOB_TYPE,
                {name: {"state": state_ids[key], **payload} for name, (key, _) in keyed.items()},
                created_by=created_by,
                delays={
                    name: request.delay_seconds
                    for name, (_, request) in keyed.items()
                    if request.delay_seconds
                },
            )
            jobs.update((key, found[name]) for name, (key, _) in keyed.items())
        if new:
            here = current_traceparent()
            created = enqueue_many(
                JOB_TYPE,
                [{"state": state_ids[key], **payload} for key in new],
                created_by=created_by,
                trace_contexts=[
                    here if r.trace_context is None else r.trace_context for r in new.values()
                ],
            )
            jobs.update(zip(new, created, strict=True))
        # An idempotency key may have returned a finished job: it is no longer waiting.
        now_waiting = {
            state_ids[key]: job.pk
            for key, job in jobs.items()
            if job.status in (Job.Status.PENDING, Job.Status.RETRYING)
            and queued[state_ids[key]] != job.pk
        }
        if now_waiting:
            whens = [When(pk=state, then=Value(job)) for state, job in now_waiting.items()]
            SyncState.objects.filter(pk__in=now_waiting).update(queued_job_id=Case(*whens))
    return jobs


def mark_due(pairs: Iterable[tuple[int, str]]) -> None:
    """Real-time sync off: remember that changes are waiting for the next interval run, for
    each (monitored user id, kind)."""
    state_ids = ensure_states(pairs)
    SyncState.objects.filter(pk__in=state_ids.values(), due_since__isnull=True).update(
        due_since=timezone.now()
    )


# The interval schedule asks in chunks: each chunk's states stay locked only for its enqueues.
INTERVAL_CHUNK = 500


def enqueue_interval_syncs(now: datetime | None = None) -> int:
    """Schedule entry (every minute): one delta job per user-and-kind per interval slot.

    SYNC_INTERVAL_MINUTES is read on every call, so a change applies without a restart.
    The idempotency key per slot makes a second scheduler (or a second call in the same
    slot) harmless; a stable per-state offset spreads the jobs over the first part of the
    interval so they do not all hit Graph in the same second.
    """

    interval = max(1, int(get("SYNC_INTERVAL_MINUTES")))
    now = now or clock.now()
    slot = int(now.timestamp() // (interval * 60))
    spread = int(min(interval * 60 / 2, float(settings.SYNC_SPREAD_SECONDS)))
    users = (
        MonitoredUser.objects.filter(is_active=True)
        .exclude(graph_id="")
        .only("pk", "watch_messages", "watch_chat_messages")
        .order_by("pk")
    )
    pairs = [(user.pk, kind) for user in users for kind in user.kinds]
    for start in range(0, len(pairs), INTERVAL_CHUNK):
        state_ids = ensure_states(pairs[start : start + INTERVAL_CHUNK])
        requests = []
        for (user_id, kind), state_id in sorted(state_ids.items()):
            delay = (state_id * 7919) % spread if spread >= 1 else 0
            requests.append(
                DeltaRequest(
                    user_id,
                    kind,
                    idempotency_key=f"{JOB_TYPE}:{state_id}:{interval}m:{slot}",
                    delay_seconds=delay or None,
                )
            )
        request_deltas(requests, trigger="interval", created_by="schedule:sync.interval")
    return len(pairs)


# --------------------------------------------------------------------------- operations


def _state_for(monitored_user_id: int, kind: str) -> SyncState:
    if kind not in dict(ResourceKind.choices):
        raise ValueError(f"Unknown resource type {kind!r}: use messages or chatMessages.")
    if not MonitoredUser.objects.filter(pk=monitored_user_id).exists():
        raise MonitoredUser.DoesNotExist(f"No monitored user #{monitored_user_id}.")
    return ensure_state(monitored_user_id, kind)


def delta_now(actor: Actor, monitored_user_id: int, kind: str) -> Job:
    """Run a delta sync for one user and kind now (coalesced with a waiting one)."""
    require(
        actor,
        "sync_delta",
        action="sync.delta",
        target_type="sync_state",
        target_id=f"{monitored_user_id}:{kind}",
    )
    state = _state_for(monitored_user_id, kind)
    with transaction.atomic():
        job = request_delta(
            monitored_user_id, kind, trigger="operator:delta", created_by=actor.name
        )
        record(
            "sync.delta",
            actor=actor,
            target_type="sync_state",
            target_id=state.pk,
            params={"user": monitored_user_id, "kind": kind, "job": job.pk},
        )
    return job


def _drop_token(state_id: int, *, manual_reset: bool) -> None:
    # Clearing the lease makes a run in progress stop at its next checkpoint (LeaseLost)
    # instead of writing its links back over the reset.
    SyncState.objects.filter(pk=state_id).update(
        delta_link="",
        next_link="",
        round_kind="",
        token_obtained_at=None,
        reset_requested=manual_reset,
        lease_owner="",
        lease_expires_at=None,
    )


def reset(actor: Actor, monitored_user_id: int, kind: str) -> SyncState:
    """Drop the delta token: the next run (interval, notification or operator) is full."""
    require(
        actor,
        "sync_reset",
        action="sync.reset",
        target_type="sync_state",
        target_id=f"{monitored_user_id}:{kind}",
    )
    state = _state_for(monitored_user_id, kind)
    with transaction.atomic():
        _drop_token(state.pk, manual_reset=True)
        record(
            "sync.reset",
            actor=actor,
            target_type="sync_state",
            target_id=state.pk,
            params={"user": monitored_user_id, "kind": kind},
        )
    state.refresh_from_db()
    return state


def full_sync(actor: Actor, monitored_user_id: int, kind: str) -> Job:
    """Reset and run: a full round starts now."""
    require(
        actor,
        "sync_full",
        action="sync.full",
        target_type="sync_state",
        target_id=f"{monitored_user_id}:{kind}",
    )
    state = _state_for(monitored_user_id, kind)
    with transaction.atomic():
        _drop_token(state.pk, manual_reset=False)
        job = request_delta(monitored_user_id, kind, trigger="operator:full", created_by=actor.name)
        record(
            "sync.full",
            actor=actor,
            target_type="sync_state",
            target_id=state.pk,
            params={"user": monitored_user_id, "kind": kind, "job": job.pk},
        )
    return job


# --------------------------------------------------------------------------- the engine


def _is_reset(exc: GraphError) -> bool:
    return isinstance(exc, DeltaTokenExpired) or (exc.code or "").lower() in _RESET_CODES


def new_lease_owner() -> str:
    """A run's lease owner: random, then the worker (host:pid) holding it, so that another
    run can tell a lease whose process is gone (bench/soak: a worker SIGKILLed mid-run
    blocked its user-and-kind until the lease expired, 330 s, and sent the delta jobs in
    between to the dead-letter queue)."""
    owner = f"{uuid.uuid4().hex[:12]}@{worker_identity()}"
    return owner if len(owner) <= 64 else owner[:12]  # never a cut-off pid


def _claim(state_id: int, owner: str, job: Job | None) -> SyncState | bool | None:
    """Take the lease (one conditional UPDATE): the state as it is then, its user loaded.
    False: another run holds it; None: the state no longer exists (its user was removed)."""
    now = timezone.now()
    take: dict[str, Any] = {
        "lease_owner": owner,
        "lease_expires_at": now + lease_duration(),
        "status": SyncState.Status.RUNNING,
        "last_attempt_at": now,
    }
    free = Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lte=now)
    state = _take(state_id, take, job, free, now=now)
    if state is not None:
        return state
    holder = list(SyncState.objects.filter(pk=state_id).values_list("lease_owner", flat=True))
    if not holder:
        return None
    held_by = holder[0]
    if "@" in held_by and worker_gone_here(held_by.partition("@")[2]):
        # Conditional on the same holder: of two runs noticing, one takes it over.
        state = _take(state_id, take, job, Q(lease_owner=held_by), held_by=held_by)
        if state is not None:
            logger.warning(
                "Sync state #%s: took over the lease of a run whose worker (%s) is gone",
                state_id,
                held_by.partition("@")[2],
            )
            return state
    return False


_TAKE_SQL = """
UPDATE {state} AS s SET lease_owner = %s, lease_expires_at = %s, status = %s,
    last_attempt_at = %s,
    queued_job_id = CASE WHEN s.queued_job_id = %s THEN NULL ELSE s.queued_job_id END
FROM {user} AS u
WHERE s.id = %s AND u.id = s.monitored_user_id AND {condition}
RETURNING {columns}
"""


def _take(
    state_id: int,
    take: dict[str, Any],
    job: Job | None,
    condition: Q,
    *,
    now: datetime | None = None,
    held_by: str = "",
) -> SyncState | None:
    """The claim's UPDATE where `condition` holds (the lease is free at `now`, or still
    `held_by` that run); the state it wrote, with its user, or None.

    It also gives up the job's place in the queue: from now on a new notification needs a
    new job, as this run may be past its change (a request_delta after the claim sees a
    running job, not this one). On PostgreSQL one statement, UPDATE ... FROM the user ...
    RETURNING both rows; elsewhere the UPDATE, then a SELECT."""
    if connection.vendor != "postgresql":
        if job is not None:
            take = {
                **take,
                "queued_job_id": Case(
                    When(queued_job_id=job.pk, then=Value(None)), default=F("queued_job_id")
                ),
            }
        if not SyncState.objects.filter(condition, pk=state_id).update(**take):
            return None
        return SyncState.objects.select_related("monitored_user").get(pk=state_id)
    ops = connection.ops
    state_fields = SyncState._meta.concrete_fields
    user_fields = MonitoredUser._meta.concrete_fields
    columns = [f's."{f.column}"' for f in state_fields] + [f'u."{f.column}"' for f in user_fields]
    if now is not None:
        where = "(s.lease_expires_at IS NULL OR s.lease_expires_at <= %s)"
        param: Any = ops.adapt_datetimefield_value(now)
    else:
        where, param = "s.lease_owner = %s", held_by
    sql = _TAKE_SQL.format(
        state=SyncState._meta.db_table,
        user=MonitoredUser._meta.db_table,
        condition=where,
        columns=", ".join(columns),
    )
    params = [
        take["lease_owner"],
        ops.adapt_datetimefield_value(take["lease_expires_at"]),
        take["status"],
        ops.adapt_datetimefield_value(take["last_attempt_at"]),
        job.pk if job is not None else None,
        state_id,
        param,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(state_fields)
    state = _from_row(SyncState, state_fields, row[:split])
    state.monitored_user = _from_row(MonitoredUser, user_fields, row[split:])
    return state


def _from_row(model: Any, fields: Any, values: Any) -> Any:
    """A model instance from raw column values, converted as a queryset converts them."""
    compiler = model.objects.none().query.get_compiler(connection=connection)
    converters = compiler.get_converters([f.get_col(model._meta.db_table) for f in fields])
    converted = next(iter(compiler.apply_converters([list(values)], converters)))
    return model.from_db(connection.alias, [f.attname for f in fields], converted)


def _save_state(state_id: int, owner: str, **fields: Any) -> None:
    """Write the state only while we hold the lease (conditional UPDATE)."""
    fields.setdefault("lease_expires_at", timezone.now() + lease_duration())
    if not SyncState.objects.filter(pk=state_id, lease_owner=owner).update(**fields):
        raise LeaseLost(f"Sync state #{state_id} was reset or taken over during the run")


def _trim(kind: str, item: dict[str, Any]) -> dict[str, Any]:
    out = {k: item[k] for k in KEEP[kind] if k in item}
    body = item.get("body")
    if kind == ResourceKind.CHAT_MESSAGES and isinstance(body, dict):
        text = html.unescape(_TAGS.sub(" ", str(body.get("content") or "")))
        out["preview"] = " ".join(text.split())[:200]
    return out


def _item_fields(kind: str, data: dict[str, Any]) -> tuple[str, datetime | None]:
    if kind == ResourceKind.MESSAGES:
        return str(data.get("subject") or "")[:255], parse_graph_datetime(
            data.get("receivedDateTime")
        )
    return str(data.get("preview") or data.get("subject") or "")[:255], parse_graph_datetime(
        data.get("createdDateTime")
    )


Change = tuple[str, str, dict[str, Any]]  # (received / updated / deleted, Graph id, data)


def apply_page(state: SyncState, items: list[dict[str, Any]]) -> tuple[int, int, int]:
    """Upsert one page by Graph id and emit its changes; returns (added, updated, removed).
    Idempotent.

    Call inside a transaction. Updated items may carry only changed properties, so
    they are merged into what we have. A replayed, unchanged item counts as nothing.
    """
    added, updated, removed, changes = _apply_page(state, items)
    _emit_changes(state, changes)
    return added, updated, removed


def _apply_page(
    state: SyncState, items: list[dict[str, Any]]
) -> tuple[int, int, int, list[Change]]:
    """apply_page without the emitting: the changes come back for the caller to emit last
    in its transaction (the feed's append lock is then held only until the commit)."""
    kind, user_id = state.kind, state.monitored_user_id
    if probe.mailbox():
        # The end-to-end probe's traffic is measured, not synced: no item, no event.
        taken = probe.take_probe_items(items)
        items = [item for item in items if item not in taken]
    live: dict[str, dict[str, Any]] = {}
    removed_ids: set[str] = set()
    for item in items:
        graph_id = item.get("id") if isinstance(item, dict) else None
        if not graph_id:
            continue
        if "@removed" in item or item.get("deletedDateTime"):
            # Outlook (and trimmed history) send `@removed`; Teams soft-deletes: the message
            # comes back with deletedDateTime set and no content. Both are a deletion here.
            removed_ids.add(graph_id)
            live.pop(graph_id, None)
        else:
            live[graph_id] = item
            removed_ids.discard(graph_id)
    now = timezone.now()
    added = updated = 0
    changes: list[Change] = []
    if live:
        existing = {
            gid: (data, removed_at)
            for gid, data, removed_at in SyncedItem.objects.filter(
                monitored_user_id=user_id, kind=kind, graph_id__in=list(live)
            ).values_list("graph_id", "data", "removed_at")
        }
        rows = []
        for graph_id, item in live.items():
            previous = existing.get(graph_id)
            data = {**(previous[0] if previous else {}), **_trim(kind, item)}
            if previous is None or previous[1] is not None:
                added += 1
                changes.append(("received", graph_id, data))
            elif data != previous[0]:
                updated += 1
                changes.append(("updated", graph_id, data))
            summary, item_at = _item_fields(kind, data)
            rows.append(
                SyncedItem(
                    monitored_user_id=user_id,
                    kind=kind,
                    graph_id=graph_id,
                    summary=summary,
                    item_at=item_at,
                    data=data,
                    seen_round=state.round_number,
                    first_seen_at=now,
                    updated_at=now,
                    removed_at=None,
                )
            )
        SyncedItem.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["monitored_user", "kind", "graph_id"],
            update_fields=["summary", "item_at", "data", "seen_round", "updated_at", "removed_at"],
        )
    removed = 0
    if removed_ids:
        removed, deleted = _mark_removed(
            SyncedItem.objects.filter(
                monitored_user_id=user_id, kind=kind, graph_id__in=list(removed_ids)
            ),
            now,
        )
        changes.extend(deleted)
    return added, updated, removed, changes


def _mark_removed(items: Any, now: datetime) -> tuple[int, list[Change]]:
    """The one way a SyncedItem is marked removed (a delta `@removed`, a Teams soft delete,
    a full round's sweep): only items not removed yet, locked, so each deletion is counted
    and becomes a `deleted` change exactly once however often the page is replayed."""
    gone = list(
        items.filter(removed_at__isnull=True)
        .select_for_update()
        .values_list("pk", "graph_id", "data")
    )
    if not gone:
        return 0, []
    removed = SyncedItem.objects.filter(
        pk__in=[pk for pk, _, _ in gone], removed_at__isnull=True
    ).update(removed_at=now)
    return removed, [("deleted", graph_id, data) for _, graph_id, data in gone]


def _emit_changes(state: SyncState, changes: list[Change]) -> None:
    """Each change becomes a feed event, in the page's transaction. The first round of a
    user and kind is the baseline (its items are history, not news) and emits nothing."""
    if not changes or state.last_success_at is None:
        return
    user = state.monitored_user
    prefix = "mail" if state.kind == ResourceKind.MESSAGES else "chat_message"
    who = {
        "id": user.graph_id,
        "upn": user.upn or user.identifier,
        "displayName": user.display_name,
    }
    events = []
    for change, graph_id, data in changes:
        sender = ((data.get("from") or {}).get("emailAddress") or {}).get("address") or (
            ((data.get("from") or {}).get("user") or {}).get("displayName")
        )
        payload: dict[str, Any] = {
            "user": who,
            "graphId": graph_id,
            "from": sender or None,
            "links": {"syncState": f"/api/sync/state/{user.graph_id}/{state.kind}"},
        }
        if state.kind == ResourceKind.MESSAGES:
            payload.update(
                subject=data.get("subject"),
                receivedAt=data.get("receivedDateTime"),
                conversationId=data.get("conversationId"),
            )
        else:
            payload.update(
                chatId=data.get("chatId"),
                preview=data.get("preview"),
                createdAt=data.get("createdDateTime"),
            )
        events.append((f"{prefix}.{change}", payload, user.graph_id, None))
    emit_many(events)


def _finish_run(
    run: SyncRun, outcome: str, started: float, error: str = "", *, also: list[str] | None = None
) -> None:
    """Record the run's outcome (and the fields named in `also`) in one UPDATE."""
    run.outcome = outcome
    run.error = error[:2000]
    run.finished_at = timezone.now()
    run.duration_ms = int((time.monotonic() - started) * 1000)
    run.save(update_fields=[*(also or ()), "outcome", "error", "finished_at", "duration_ms"])


def run(  # noqa: C901 (a run's life cycle (lease, pages, reset, hand-over) in order)
    state_id: int, *, job: Job | None = None, trigger: str = "", max_pages: int | None = None
) -> SyncRun | None:
    """Run (or continue) the delta round of one state. Raises on failure (the job retries;
    the checkpoint keeps the pages already applied). None: nothing to run (the state or its
    user was removed, or the user is no longer synced for this kind)."""
    owner = new_lease_owner()
    state = _claim(state_id, owner, job)
    if state is None:
        return None
    if not isinstance(state, SyncState):
        raise SyncBusy(f"Sync state #{state_id} is being synced by another run")
    user = state.monitored_user
    started = time.monotonic()
    if not user.is_active or not user.graph_id or state.kind not in user.kinds:
        _save_state(
            state_id, owner, lease_owner="", lease_expires_at=None, status=SyncState.Status.IDLE
        )
        return None
    budget = max_pages or max_pages_per_run()
    headers = page_headers(state.kind)

    params: dict[str, str] | None = None
    resumed = bool(state.next_link)
    if state.next_link:
        url, kind = state.next_link, state.round_kind or SyncState.RoundKind.DELTA
    elif state.delta_link and not state.reset_requested:
        url, kind = state.delta_link, SyncState.RoundKind.DELTA
    else:
        url, params = initial_request(user, state.kind)
        kind = (
            SyncState.RoundKind.MANUAL_RESET if state.reset_requested else SyncState.RoundKind.FULL
        )
    # A new round's fields are written with its first page's checkpoint (one UPDATE, one
    # commit fewer): a run that dies before that page leaves the state as it found it, and
    # the next run starts the same round again.
    round_fields: dict[str, Any] = {}
    if not resumed:
        state.round_kind = kind
        state.round_started_at = timezone.now()
        if kind != SyncState.RoundKind.DELTA:
            state.round_number += 1
        round_fields = {
            "round_kind": kind,
            "round_started_at": state.round_started_at,
            "round_number": state.round_number,
            "reset_requested": False,
        }
    sync_run = SyncRun.objects.create(
        state=state, kind=kind, resumed=resumed, trigger=trigger[:40], job=job
    )
    reset_done = False
    try:
        while True:
            try:
                body = graph.request("GET", url, params=params, headers=headers).body or {}
            except GraphError as exc:
                if not _is_reset(exc) or reset_done:
                    raise
                # The token (or a stale nextLink) is gone: start over with a full round.
                reset_done = True
                logger.warning("Delta token of %s expired (%s); full resync", state, exc.code)
                _finish_run(sync_run, SyncRun.Outcome.RESET, started, str(exc))
                state.round_kind = SyncState.RoundKind.AUTO_RESET
                state.round_number += 1
                state.round_started_at = timezone.now()
                restart: dict[str, Any] = {
                    **round_fields,  # reset_requested, when the round had not started yet
                    "delta_link": "",
                    "next_link": "",
                    "round_kind": state.round_kind,
                    "round_number": state.round_number,
                    "round_started_at": state.round_started_at,
                    "token_obtained_at": None,
                }
                _save_state(state_id, owner, **restart)
                round_fields = {}
                sync_run = SyncRun.objects.create(
                    state=state, kind=state.round_kind, trigger="token-expired", job=job
                )
                started = time.monotonic()
                url, params = initial_request(user, state.kind)
                continue
            items = body.get("value") or []
            next_link = body.get("@odata.nextLink") or ""
            delta_link = body.get("@odata.deltaLink") or ""
            if not next_link and not delta_link:
                raise GraphError(
                    "Delta page without nextLink or deltaLink", code="MalformedDeltaPage"
                )
            with transaction.atomic():
                added, updated, removed, changes = _apply_page(state, items)
                sync_run.pages += 1
                sync_run.added += added
                sync_run.updated += updated
                sync_run.removed += removed
                fields: dict[str, Any] = {
                    **round_fields,
                    "next_link": next_link,
                    "total_added": F("total_added") + added,
                    "total_updated": F("total_updated") + updated,
                    "total_removed": F("total_removed") + removed,
                }
                if delta_link:
                    swept, deleted = _sweep(state)
                    changes.extend(deleted)
                    sync_run.removed += swept
                    fields.update(
                        _complete_round(state),
                        delta_link=delta_link,
                        total_removed=F("total_removed") + removed + swept,
                    )
                _save_state(state_id, owner, **fields)
                round_fields = {}
                counted = ["pages", "added", "updated", "removed"]
                if delta_link:
                    # The run's outcome commits with the round's last checkpoint.
                    _finish_run(sync_run, SyncRun.Outcome.SUCCEEDED, started, also=counted)
                else:
                    sync_run.save(update_fields=counted)
                # Last in the transaction: emitting takes the feed's append lock (see
                # portal.events.services), which every event-producing transaction then
                # waits for until this one commits.
                _emit_changes(state, changes)
            if delta_link:
                return sync_run
            url, params = next_link, None
            if sync_run.pages >= budget:
                with transaction.atomic():
                    _save_state(
                        state_id,
                        owner,
                        lease_owner="",
                        lease_expires_at=None,
                        status=SyncState.Status.IDLE,
                    )
                    request_delta(
                        user.pk, state.kind, trigger="continuation", created_by="sync:continuation"
                    )
                _finish_run(sync_run, SyncRun.Outcome.CONTINUED, started)
                return sync_run
    except Exception as exc:
        _finish_run(sync_run, SyncRun.Outcome.FAILED, started, f"{type(exc).__name__}: {exc}")
        error = f"{type(exc).__name__}: {exc}"[:2000]
        with transaction.atomic():
            if SyncState.objects.filter(pk=state_id, lease_owner=owner).update(
                status=SyncState.Status.FAILED,
                last_error=error,
                last_error_at=timezone.now(),
                lease_owner="",
                lease_expires_at=None,
            ):
                emit(
                    "sync.failed",
                    {
                        "user": {"id": user.graph_id, "upn": user.upn or user.identifier},
                        "resourceType": state.kind,
                        "run": sync_run.pk,
                        "error": redact_text(error)[:500],
                    },
                    subject=user.graph_id,
                )
        raise


def _sweep(state: SyncState) -> tuple[int, list[Change]]:
    """After a full round: what it did not see no longer exists (deleted during a gap).
    Each swept item is a `deleted` change, like a delta `@removed` (the caller emits them in
    the same transaction)."""
    if state.round_kind == SyncState.RoundKind.DELTA:
        return 0, []
    unseen = SyncedItem.objects.filter(
        monitored_user_id=state.monitored_user_id,
        kind=state.kind,
        seen_round__lt=state.round_number,
    )
    window = KINDS[state.kind].delta_window
    if window is not None:
        # Older than the window is beyond what the round could see, not deleted.
        unseen = unseen.filter(item_at__gte=timezone.now() - window)
    return _mark_removed(unseen, timezone.now())


def _complete_round(state: SyncState) -> dict[str, Any]:
    """State fields for a finished round (inside the last page's transaction).

    SQL expressions, not values read first: the item count, the token's age and `due_since`
    are computed by the checkpoint's UPDATE from the row as it is then (a `mark_due` during
    the run included), without a SELECT each."""
    now = timezone.now()
    live = (
        SyncedItem.objects.filter(
            monitored_user_id=OuterRef("monitored_user_id"),
            kind=OuterRef("kind"),
            removed_at__isnull=True,
        )
        .order_by()
        .values("monitored_user_id")
        .annotate(live=Count("pk"))
        .values("live")
    )
    fields: dict[str, Any] = {
        "status": SyncState.Status.IDLE,
        "last_success_at": now,
        "last_error": "",
        "item_count": Coalesce(Subquery(live), Value(0)),
        # The age of the token chain: reset by every full round.
        "token_obtained_at": Case(
            When(token_obtained_at__isnull=False, then=F("token_obtained_at")),
            default=Value(now),
        )
        if state.round_kind == SyncState.RoundKind.DELTA
        else now,
        "lease_owner": "",
        "lease_expires_at": None,
    }
    if state.round_started_at is not None:
        # Due before this round started: this round has seen those changes.
        fields["due_since"] = Case(
            When(due_since__lte=state.round_started_at, then=Value(None)),
            default=F("due_since"),
        )
    return fields
