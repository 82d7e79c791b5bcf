"""Read-only answers to the operators' two questions, for the console, the API and commands:

- "why isn't this user syncing?": a timeline of what happened to one monitored user and a
  plain-language diagnosis (`user_report`);
- "is Graph in step with us?": the database's subscriptions and Graph's side by side
  (`compare_with_graph`), one paged GET /subscriptions, limited per person.

Nothing here changes anything, so nothing is audited except a refused permission.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.core.cache import cache
from django.db.models import Q
from django.utils import timezone

from integrations.graph import kinds
from integrations.graph.errors import GraphError
from integrations.microsoft import subscriptions, sync
from integrations.microsoft.models import (
    GraphCall,
    LifecycleEvent,
    MonitoredUser,
    NotificationInbox,
    Subscription,
    SyncRun,
    SyncState,
)
from portal.access.actors import Actor
from portal.access.authz import require
from portal.audit.models import AuditEvent
from portal.jobs.models import Job, PausedJobType
from portal.runtime.registry import get as runtime

# Outlook delta tokens stop working after about 7 days without use (Microsoft Learn: "Use delta
# query to track changes in Microsoft Graph data").
DELTA_TOKEN_DAYS = 7
TIMELINE_WINDOWS = {"24h": 24, "7d": 24 * 7}
TIMELINE_LIMIT = 60
# Each compare lists every subscription in Graph (paged): an operator's tool, a few a minute.
COMPARES_PER_MINUTE = 6


class TimelineEntry(NamedTuple):
    at: datetime
    category: str
    state: str
    title: str
    detail: str = ""
    job_id: int | None = None


class Finding(NamedTuple):
    state: str  # "failed", "paused" (a note) or "succeeded"
    text: str


@dataclass(frozen=True)
class UserReport:
    user: MonitoredUser
    window: str
    diagnosis: list[Finding]
    entries: list[TimelineEntry]

    def as_json(self) -> dict[str, Any]:
        return {
            "userId": self.user.upn or self.user.identifier,
            "graphUserId": self.user.graph_id,
            "window": self.window,
            "diagnosis": [finding._asdict() for finding in self.diagnosis],
            "timeline": [
                {
                    "at": entry.at,
                    "category": entry.category,
                    "state": entry.state,
                    "title": entry.title,
                    "detail": entry.detail,
                    "jobId": entry.job_id,
                }
                for entry in self.entries
            ],
        }


def user_report(actor: Actor, user: MonitoredUser, window: str = "24h") -> UserReport:
    """The diagnosis and the timeline; operators' actions (from the audit log) only for
    those who may read the audit log."""
    require(
        actor,
        "view_console",
        action="sync.diagnose",
        target_type="monitored_user",
        target_id=user.pk,
    )
    if window not in TIMELINE_WINDOWS:
        raise ValueError(f"window must be one of {', '.join(TIMELINE_WINDOWS)}.")
    return UserReport(
        user=user,
        window=window,
        diagnosis=diagnose(user),
        entries=timeline(user, TIMELINE_WINDOWS[window], with_audit=actor.can("view_audit")),
    )


def timeline(user: MonitoredUser, hours: int, *, with_audit: bool) -> list[TimelineEntry]:
    """Everything that happened to one user, newest first, bounded in time and count."""
    now = timezone.now()
    since = now - timedelta(hours=hours)
    entries: list[TimelineEntry] = []
    states = list(SyncState.objects.filter(monitored_user=user))
    state_ids = [s.pk for s in states]
    subs = list(Subscription.objects.filter(monitored_user=user))
    sub_ids = [s.pk for s in subs]

    def add(at: datetime | None, *args: Any, **kwargs: Any) -> None:
        if at is not None and at >= since:
            entries.append(TimelineEntry(at, *args, **kwargs))

    for sub in subs:
        name = f"{sub.kind} subscription #{sub.pk}"
        add(
            sub.created_at,
            "subscription",
            "succeeded" if sub.graph_id else "failed",
            f"{name} created",
            sub.graph_id or sub.last_error,
        )
        add(
            sub.last_renewed_at,
            "subscription",
            "succeeded",
            f"{name} renewed",
            f"until {sub.expiration:%Y-%m-%d %H:%M}" if sub.expiration else "",
        )
        add(sub.last_error_at, "subscription", "failed", f"{name} error", sub.last_error)
        if sub.expiration and sub.expiration < now:
            add(
                sub.expiration,
                "subscription",
                "failed",
                f"{name} expired",
                "Graph stopped sending notifications",
            )
    for event in LifecycleEvent.objects.filter(subscription_id__in=sub_ids, received_at__gte=since)[
        :TIMELINE_LIMIT
    ]:
        add(
            event.received_at,
            "lifecycle",
            "failed" if event.status == "failed" else "paused",
            f"Graph sent {event.event}",
            f"{event.status}: {event.outcome}",
            event.followup_job_id,
        )
    for note in NotificationInbox.objects.filter(monitored_user=user, received_at__gte=since)[
        :TIMELINE_LIMIT
    ]:
        add(
            note.received_at,
            "notification",
            "succeeded" if note.status == "processed" else "pending",
            f"Notification: {note.change_type} {note.kind}",
            f"{note.status}",
            note.sync_job_id,
        )
    runs = SyncRun.objects.filter(state_id__in=state_ids, started_at__gte=since)
    for run in runs.select_related("state")[:TIMELINE_LIMIT]:
        add(
            run.started_at,
            "sync run",
            run.outcome,
            f"{run.get_kind_display()} run of {run.state.kind}: {run.outcome}",
            run.error
            or f"{run.pages} pages, +{run.added} ~{run.updated} -{run.removed}"
            f"{' · ' + run.trigger if run.trigger else ''}",
            run.job_id,
        )
    job_ids = {job_id for job_id in runs.values_list("job_id", flat=True)[:200] if job_id}
    job_ids |= {s.queued_job_id for s in states if s.queued_job_id}
    for job in Job.objects.filter(pk__in=job_ids).exclude(status=Job.Status.SUCCEEDED):
        add(
            job.updated_at,
            "job",
            job.status,
            f"Job #{job.pk} {job.job_type} is {job.status}",
            job.last_error,
            job.pk,
        )
    mailboxes = {(user.graph_id or "").lower(), user.upn.lower()} - {""}
    if user.graph_id:
        for call in GraphCall.objects.filter(
            created_at__gte=since, throttled=True, mailbox__in=mailboxes
        )[:TIMELINE_LIMIT]:
            add(
                call.created_at,
                "429",
                "paused",
                f"Graph throttled {call.method} {call.route}",
                f"Retry-After {call.retry_after or '?'} s",
            )
    if with_audit:
        targets = (
            Q(target_type="monitored_user", target_id=str(user.pk))
            | Q(target_type="sync_state", target_id__in=[str(i) for i in state_ids])
            | Q(target_type="subscription", target_id__in=[str(i) for i in sub_ids])
        )
        for action in AuditEvent.objects.filter(targets, created_at__gte=since)[:TIMELINE_LIMIT]:
            add(
                action.created_at,
                "operator",
                action.outcome,
                f"{action.actor_name}: {action.action}",
                action.reason,
            )
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[: TIMELINE_LIMIT * 2]


def diagnose(user: MonitoredUser) -> list[Finding]:
    """Plain-language reasons a user may not be syncing, worst first."""
    findings: list[Finding] = []
    if not user.is_active:
        findings.append(Finding("failed", "The user is not monitored any more (removed)."))
    if not user.graph_id:
        findings.append(
            Finding("failed", f"Graph id not resolved: {user.last_error or 'pending'}.")
        )
    if PausedJobType.objects.filter(job_type=sync.JOB_TYPE).exists():
        findings.append(Finding("failed", "Sync jobs are paused (Jobs page): nothing runs."))
    live = Subscription.objects.active().filter(monitored_user=user, expiration__gt=timezone.now())
    for kind in user.kinds:
        if not live.filter(kind=kind).exists():
            findings.append(
                Finding(
                    "failed",
                    f"No live {kind} subscription: no real-time "
                    "notifications (Set up all creates one).",
                )
            )
    if not runtime("ENABLE_REALTIME_SYNC"):
        findings.append(
            Finding(
                "paused",
                "Real-time sync is off (Settings): notifications only mark "
                "the user due for the next interval run.",
            )
        )
    for state in SyncState.objects.filter(monitored_user=user):
        if state.status == SyncState.Status.FAILED:
            findings.append(Finding("failed", f"{state.kind}: last run failed: {state.last_error}"))
        if state.token_age and state.token_age.days >= DELTA_TOKEN_DAYS:
            findings.append(
                Finding(
                    "paused",
                    f"{state.kind}: delta token is {state.token_age.days} "
                    "days old; expect an automatic full resync.",
                )
            )
    if not findings:
        findings.append(
            Finding(
                "succeeded",
                "Nothing looks wrong: subscriptions are live and the last runs succeeded.",
            )
        )
    return findings


# --------------------------------------------------------------------------- Graph vs database


class CompareLimited(Exception):
    """This person compared too often; `retry_after` seconds until they may again."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"Comparing with Graph is limited to {COMPARES_PER_MINUTE} a minute; "
            f"try again in {retry_after} s."
        )
        self.retry_after = retry_after


@dataclass
class Pair:
    """One subscription as the database and Graph see it, with a verdict."""

    sub: Subscription | None
    remote: dict[str, Any] | None
    graph_expiry: datetime | None
    verdict: str
    state: str  # "succeeded" (in step), "failed", "paused" or "cancelled" (not ours)

    def as_json(self) -> dict[str, Any]:
        remote = self.remote or {}
        return {
            "id": self.sub.pk if self.sub else None,
            "graphId": (self.sub.graph_id if self.sub else None) or remote.get("id"),
            "state": self.sub.state if self.sub else None,
            "kind": self.sub.kind if self.sub else None,
            "user": str(self.sub.monitored_user) if self.sub and self.sub.monitored_user else None,
            "expiration": self.sub.expiration if self.sub else None,
            "inGraph": self.remote is not None,
            "graphExpiration": self.graph_expiry,
            "resource": remote.get("resource") or (self.sub.resource if self.sub else None),
            "verdict": self.verdict,
            "status": self.state,
        }


@dataclass
class Comparison:
    pairs: list[Pair] = field(default_factory=list)
    error: str = ""

    @property
    def in_step(self) -> int:
        return sum(1 for pair in self.pairs if pair.state == "succeeded")

    def as_json(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "inStep": self.in_step,
            "total": len(self.pairs),
            "pairs": [pair.as_json() for pair in self.pairs],
        }


def _person(actor: Actor) -> str:
    """One budget per person: their session and their API tokens share it."""
    if actor.user is not None:
        return f"user:{actor.user.pk}"
    if actor.client is not None:
        return f"client:{actor.client.pk}"
    return f"{actor.kind}:{actor.name}"


def _compare_wait(actor: Actor) -> int:
    """0 when this person may compare now, else the seconds until they may again."""
    window = int(time.time() // 60)
    key = f"portal:subscriptions-compare:{_person(actor)}:{window}"
    cache.add(key, 0, timeout=90)
    if cache.incr(key) > COMPARES_PER_MINUTE:
        return 60 - int(time.time() % 60)
    return 0


def compare_with_graph(actor: Actor, *, limit: int = 500) -> Comparison:
    """The database's subscriptions (newest `limit` with a Graph id) beside Graph's list.

    Raises PermissionDenied (audited) without setup_subscriptions, CompareLimited past
    COMPARES_PER_MINUTE a minute for this person. A Graph error is reported in `error`.
    """
    require(actor, "setup_subscriptions", action="webhooks.compare", target_type="subscription")
    wait = _compare_wait(actor)
    if wait:
        raise CompareLimited(wait)
    try:
        remote = {item["id"]: item for item in subscriptions.list_remote()}
    except GraphError as exc:
        return Comparison(error=exc.message)
    result = Comparison()
    known = (
        Subscription.objects.select_related("monitored_user")
        .exclude(graph_id__isnull=True)
        .order_by("-id")[:limit]
    )
    for sub in known:
        item = remote.pop(sub.graph_id, None)
        graph_expiry = kinds.parse_graph_datetime(item.get("expirationDateTime")) if item else None
        if item is None and sub.state == Subscription.State.ACTIVE:
            verdict, state = "missing in Graph: recreate (or run Set up all)", "failed"
        elif (
            item is None
            and sub.state == Subscription.State.REMOVED
            and not sub.replaced_by_id
            and (sub.monitored_user is None or sub.monitored_user.is_active)
        ):  # as Subscription.objects.missing() counts it
            verdict, state = "missing in Graph: being recreated (or run Set up all)", "failed"
        elif item is None and sub.replaced_by_id:
            verdict, state = f"replaced by #{sub.replaced_by_id}", "cancelled"
        elif item is None:
            verdict, state = f"{sub.get_state_display()}, not in Graph", "cancelled"
        elif sub.state != Subscription.State.ACTIVE:
            verdict, state = f"in Graph but {sub.state} here: clean up", "paused"
        elif (
            graph_expiry
            and sub.expiration
            and abs((graph_expiry - sub.expiration).total_seconds()) > 60
        ):
            verdict, state = "expiry differs: renew", "paused"
        else:
            verdict, state = "in step", "succeeded"
        result.pairs.append(Pair(sub, item, graph_expiry, verdict, state))
    for item in remote.values():
        ours = subscriptions.ours(item)
        result.pairs.append(
            Pair(
                None,
                item,
                kinds.parse_graph_datetime(item.get("expirationDateTime")),
                "orphan of this deployment: Clean up deletes it"
                if ours
                else "another deployment's: left alone",
                "failed" if ours else "cancelled",
            )
        )
    return result
