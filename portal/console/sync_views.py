"""Users and sync: monitored users (add by UPN, remove), a card per resource type with delta
now / full sync / reset, and a per-user timeline that answers "why isn't this syncing?".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from integrations.microsoft import subscriptions, sync
from integrations.microsoft.errors import GraphError
from integrations.microsoft.models import (
    GraphCall,
    LifecycleEvent,
    MonitoredUser,
    NotificationInbox,
    ResourceKind,
    Subscription,
    SyncRun,
    SyncState,
)
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.audit.models import AuditEvent
from portal.console.paging import empty_page, keyset_page
from portal.jobs.models import Job, PausedJobType
from portal.runtime.registry import get as runtime

PAGE_SIZE = 50
# Outlook delta tokens stop working after about 7 days without use (graph-reference.md).
DELTA_TOKEN_DAYS = 7
TIMELINE_WINDOWS = {"24h": 24, "7d": 24 * 7}
TIMELINE_LIMIT = 60


class UserFilter(forms.Form):
    q = forms.CharField(required=False, max_length=255, label="User starts with")
    status = forms.ChoiceField(
        required=False, label="Sync state", choices=[("", "any"), *SyncState.Status.choices]
    )
    inactive = forms.BooleanField(required=False, label="Include removed users")
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


class AddUserForm(forms.Form):
    identifier = forms.CharField(label="User principal name or Graph id", max_length=255)
    messages = forms.BooleanField(required=False, initial=True, label="Outlook inbox")
    chat_messages = forms.BooleanField(required=False, initial=True, label="Teams chats")

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not data.get("messages") and not data.get("chat_messages"):
            raise forms.ValidationError("Choose at least one resource to watch.")
        return data


@require_GET
@requires("view_console")
def user_list(request: HttpRequest) -> HttpResponse:
    form = UserFilter(request.GET)
    page = empty_page(request)
    if form.is_valid():
        data = form.cleaned_data
        queryset = MonitoredUser.objects.all()
        if not data.get("inactive"):
            queryset = queryset.filter(is_active=True)
        if data.get("q"):
            queryset = queryset.filter(
                Q(identifier__istartswith=data["q"]) | Q(upn__istartswith=data["q"])
            )
        if data.get("status"):
            queryset = queryset.filter(sync_states__status=data["status"]).distinct()
        page = keyset_page(request, queryset, data.get("before"), PAGE_SIZE)
    users = page.rows
    states: dict[int, dict[str, SyncState]] = {}
    for state in SyncState.objects.filter(monitored_user__in=users):
        states.setdefault(state.monitored_user_id, {})[state.kind] = state
    for user in users:
        by_kind = states.get(user.pk, {})
        user.state_rows = [(kind, by_kind.get(kind)) for kind in user.kinds]  # type: ignore[attr-defined]
    context = {
        "form": form,
        "users": users,
        **page.context(),
        "add_form": AddUserForm(),
        "can_manage": request.user.has_perm("access.manage_monitored_users"),
    }
    template = "console/sync_users.html#users" if request.htmx else "console/sync_users.html"
    return render(request, template, context)


@require_POST
@requires("manage_monitored_users")
def user_add(request: HttpRequest) -> HttpResponse:
    form = AddUserForm(request.POST)
    if not form.is_valid():
        for errors in form.errors.values():
            messages.error(request, " ".join(errors))
        return redirect("console:sync_users")
    try:
        user = subscriptions.add_monitored_user(
            Actor.from_request(request),
            form.cleaned_data["identifier"],
            messages=form.cleaned_data["messages"],
            chat_messages=form.cleaned_data["chat_messages"],
        )
    except (ValueError, GraphError) as exc:
        messages.error(request, str(getattr(exc, "message", exc)))
        return redirect("console:sync_users")
    messages.success(
        request,
        f"{user} is monitored. Subscriptions are created by the next "
        "maintenance run or Set up all on the Subscriptions page.",
    )
    return redirect("console:sync_user", user_id=user.pk)


def _user_or_404(user_id: int) -> MonitoredUser:
    user = MonitoredUser.objects.filter(pk=user_id).first()
    if user is None:
        raise Http404(f"There is no monitored user #{user_id}.")
    return user


@requires("manage_monitored_users")
def user_remove(request: HttpRequest, user_id: int) -> HttpResponse:
    """GET: what removing does. POST: do it."""
    user = _user_or_404(user_id)
    if request.method != "POST":
        return render(
            request,
            "console/sync_user_remove.html",
            {
                "monitored": user,
                "subscriptions": Subscription.objects.filter(
                    monitored_user=user, state=Subscription.State.ACTIVE
                ).count(),
            },
        )
    subscriptions.remove_monitored_user(Actor.from_request(request), user.pk)
    messages.success(
        request,
        f"{user} is no longer monitored. Its subscriptions are deleted by "
        "the next Set up all; its sync history is kept.",
    )
    return redirect("console:sync_users")


def _card(user: MonitoredUser, kind: str, state: SyncState | None) -> dict[str, Any]:
    token_age = state.token_age if state else None
    token_days_left = None
    if token_age is not None:
        token_days_left = DELTA_TOKEN_DAYS - token_age.days
    return {
        "kind": kind,
        "label": ResourceKind(kind).label,
        "state": state,
        "watched": kind in user.kinds,
        "token_age": token_age,
        "token_days_left": token_days_left,
        "runs": list(SyncRun.objects.filter(state=state).select_related("job")[:8])
        if state
        else [],
        "queued_job": Job.objects.filter(pk=state.queued_job_id).first()
        if state and state.queued_job_id
        else None,
        "subscription": Subscription.objects.filter(monitored_user=user, kind=kind)
        .exclude(state=Subscription.State.REMOVED, replaced_by__isnull=False)
        .order_by("-id")
        .first(),
    }


@require_GET
@requires("view_console")
def user_detail(request: HttpRequest, user_id: int) -> HttpResponse:
    user = _user_or_404(user_id)
    states = {s.kind: s for s in SyncState.objects.filter(monitored_user=user)}
    kinds = [k for k, _ in ResourceKind.choices if k in user.kinds or k in states]
    context = {
        # Not "user": base.html reads the signed-in user under that name.
        "monitored": user,
        "cards": [_card(user, kind, states.get(kind)) for kind in kinds],
        "can_delta": request.user.has_perm("access.sync_delta"),
        "can_full": request.user.has_perm("access.sync_full"),
        "can_reset": request.user.has_perm("access.sync_reset"),
        "can_manage": request.user.has_perm("access.manage_monitored_users"),
        "token_days": DELTA_TOKEN_DAYS,
    }
    template = "console/sync_user.html#cards" if request.htmx else "console/sync_user.html"
    return render(request, template, context)


class SyncActionForm(forms.Form):
    kind = forms.ChoiceField(choices=ResourceKind.choices)
    action = forms.ChoiceField(choices=[("delta", "delta"), ("full", "full"), ("reset", "reset")])


_ACTION_PERMISSION = {"delta": "sync_delta", "full": "sync_full", "reset": "sync_reset"}


@require_POST
@requires("sync_delta")
def user_sync_action(request: HttpRequest, user_id: int) -> HttpResponse:
    """Delta now (support), full sync and reset (operator; the service checks the role)."""
    user = _user_or_404(user_id)
    form = SyncActionForm(request.POST)
    back = redirect("console:sync_user", user_id=user.pk)
    if not form.is_valid():
        messages.error(request, "Choose a resource type and an action.")
        return back
    kind, action = form.cleaned_data["kind"], form.cleaned_data["action"]
    actor = Actor.from_request(request)
    label = ResourceKind(kind).label.lower()
    if action == "delta":
        job = sync.delta_now(actor, user.pk, kind)
        messages.success(
            request,
            f"Delta sync of {label} queued as job #{job.pk}: it fetches "
            "only what changed since the last round.",
        )
    elif action == "full":
        job = sync.full_sync(actor, user.pk, kind)
        messages.success(
            request,
            f"Full sync of {label} started as job #{job.pk}: every item "
            "is fetched again; items gone from the mailbox are removed.",
        )
    else:
        sync.reset(actor, user.pk, kind)
        messages.success(
            request,
            f"Sync state of {label} reset: the delta token is dropped and "
            "the next run (interval, notification or Delta sync now) is a "
            "full one.",
        )
    return back


def _timeline(user: MonitoredUser, hours: int, *, with_audit: bool) -> list[dict[str, Any]]:
    """Everything that happened to one user, newest first, bounded in time and count."""
    since = timezone.now() - timedelta(hours=hours)
    entries: list[dict[str, Any]] = []
    states = list(SyncState.objects.filter(monitored_user=user))
    state_ids = [s.pk for s in states]
    subs = list(Subscription.objects.filter(monitored_user=user))
    sub_ids = [s.pk for s in subs]

    def add(
        at: Any, category: str, state: str, title: str, detail: str = "", link: str = ""
    ) -> None:
        if at is not None and at >= since:
            entries.append(
                {
                    "at": at,
                    "category": category,
                    "state": state,
                    "title": title,
                    "detail": detail,
                    "link": link,
                }
            )

    for sub in subs:
        add(
            sub.created_at,
            "subscription",
            "succeeded" if sub.graph_id else "failed",
            f"{sub.kind} subscription #{sub.pk} created",
            sub.graph_id or sub.last_error,
        )
        add(
            sub.last_renewed_at,
            "subscription",
            "succeeded",
            f"{sub.kind} subscription #{sub.pk} renewed",
            f"until {sub.expiration:%Y-%m-%d %H:%M}" if sub.expiration else "",
        )
        add(
            sub.last_error_at,
            "subscription",
            "failed",
            f"{sub.kind} subscription #{sub.pk} error",
            sub.last_error,
        )
        if sub.expiration and sub.expiration < timezone.now():
            add(
                sub.expiration,
                "subscription",
                "failed",
                f"{sub.kind} subscription #{sub.pk} expired",
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
            reverse("console:job_detail", args=[event.followup_job_id])
            if event.followup_job_id
            else "",
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
            reverse("console:job_detail", args=[note.sync_job_id]) if note.sync_job_id else "",
        )
    for run in SyncRun.objects.filter(state_id__in=state_ids, started_at__gte=since).select_related(
        "state"
    )[:TIMELINE_LIMIT]:
        add(
            run.started_at,
            "sync run",
            run.outcome,
            f"{run.get_kind_display()} run of {run.state.kind}: {run.outcome}",
            run.error
            or f"{run.pages} pages, +{run.added} ~{run.updated} -{run.removed}"
            f"{' · ' + run.trigger if run.trigger else ''}",
            reverse("console:job_detail", args=[run.job_id]) if run.job_id else "",
        )
    job_ids = {
        r.job_id
        for r in SyncRun.objects.filter(state_id__in=state_ids, started_at__gte=since)[:200]
        if r.job_id
    }
    job_ids |= {s.queued_job_id for s in states if s.queued_job_id}
    for job in Job.objects.filter(pk__in=job_ids).exclude(status=Job.Status.SUCCEEDED):
        add(
            job.updated_at,
            "job",
            job.status,
            f"Job #{job.pk} {job.job_type} is {job.status}",
            job.last_error,
            reverse("console:job_detail", args=[job.pk]),
        )
    mailbox = (user.graph_id or "").lower()
    if mailbox:
        for call in GraphCall.objects.filter(
            created_at__gte=since, throttled=True, mailbox__in={mailbox, user.upn.lower()} - {""}
        )[:TIMELINE_LIMIT]:
            add(
                call.created_at,
                "429",
                "paused",
                f"Graph throttled {call.method} {call.route}",
                f"Retry-After {call.retry_after or '?'} s",
            )
    targets = (
        Q(target_type="monitored_user", target_id=str(user.pk))
        | Q(target_type="sync_state", target_id__in=[str(i) for i in state_ids])
        | Q(target_type="subscription", target_id__in=[str(i) for i in sub_ids])
    )
    # Operators' actions come from the audit log: only for those who may read it.
    audit = AuditEvent.objects.filter(targets, created_at__gte=since)
    for event in audit[:TIMELINE_LIMIT] if with_audit else []:
        add(
            event.created_at,
            "operator",
            event.outcome,
            f"{event.actor_name}: {event.action}",
            event.reason,
        )
    entries.sort(key=lambda e: e["at"], reverse=True)
    return entries[: TIMELINE_LIMIT * 2]


@require_GET
@requires("view_console")
def user_timeline(request: HttpRequest, user_id: int) -> HttpResponse:
    user = _user_or_404(user_id)
    window = request.GET.get("window", "24h")
    if window not in TIMELINE_WINDOWS:
        window = "24h"
    entries = _timeline(
        user, TIMELINE_WINDOWS[window], with_audit=request.user.has_perm("access.view_audit")
    )
    states = list(SyncState.objects.filter(monitored_user=user))
    return render(
        request,
        "console/sync_timeline.html",
        {
            "monitored": user,
            "entries": entries,
            "window": window,
            "diagnosis": _diagnose(user, states),
            "windows": TIMELINE_WINDOWS,
        },
    )


def _diagnose(user: MonitoredUser, states: list[SyncState]) -> list[tuple[str, str]]:
    """Plain-language reasons a user may not be syncing, worst first."""
    findings: list[tuple[str, str]] = []

    if not user.is_active:
        findings.append(("failed", "The user is not monitored any more (removed)."))
    if not user.graph_id:
        findings.append(("failed", f"Graph id not resolved: {user.last_error or 'pending'}."))
    if PausedJobType.objects.filter(job_type=sync.JOB_TYPE).exists():
        findings.append(("failed", "Sync jobs are paused (Jobs page): nothing runs."))
    live = Subscription.objects.filter(
        monitored_user=user, state=Subscription.State.ACTIVE, expiration__gt=timezone.now()
    )
    for kind in user.kinds:
        if not live.filter(kind=kind).exists():
            findings.append(
                (
                    "failed",
                    f"No live {kind} subscription: no real-time "
                    "notifications (Set up all creates one).",
                )
            )
    if not runtime("ENABLE_REALTIME_SYNC"):
        findings.append(
            (
                "paused",
                "Real-time sync is off (Settings): notifications only mark "
                "the user due for the next interval run.",
            )
        )
    for state in states:
        if state.status == SyncState.Status.FAILED:
            findings.append(("failed", f"{state.kind}: last run failed: {state.last_error}"))
        if state.token_age and state.token_age.days >= DELTA_TOKEN_DAYS:
            findings.append(
                (
                    "paused",
                    f"{state.kind}: delta token is {state.token_age.days} "
                    "days old; expect an automatic full resync.",
                )
            )
    if not findings:
        findings.append(
            (
                "succeeded",
                "Nothing looks wrong: subscriptions are live and the last runs succeeded.",
            )
        )
    return findings
