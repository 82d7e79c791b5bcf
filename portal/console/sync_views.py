"""Users and sync: monitored users (add by UPN, remove), a card per resource type with delta
now / full sync / reset, and a per-user timeline that answers "why isn't this syncing?".
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from integrations.graph.errors import GraphError
from integrations.microsoft import diagnosis, monitored_users, sync
from integrations.microsoft.diagnosis import DELTA_TOKEN_DAYS
from integrations.microsoft.models import (
    MonitoredUser,
    ResourceKind,
    Subscription,
    SyncRun,
    SyncState,
)
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.console.htmx import HtmxHttpRequest
from portal.console.paging import empty_page, keyset_page
from portal.jobs.models import Job

PAGE_SIZE = 50


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
        super().clean()
        data = self.cleaned_data
        if not data.get("messages") and not data.get("chat_messages"):
            raise forms.ValidationError("Choose at least one resource to watch.")
        return data


@require_GET
@requires("view_console")
def user_list(request: HtmxHttpRequest) -> HttpResponse:
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
        user.state_rows = [(kind, by_kind.get(kind)) for kind in user.kinds]
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
            messages.error(request, " ".join(map(str, errors)))
        return redirect("console:sync_users")
    try:
        user = monitored_users.add_monitored_user(
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
    monitored_users.remove_monitored_user(Actor.from_request(request), user.pk)
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
def user_detail(request: HtmxHttpRequest, user_id: int) -> HttpResponse:
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


@require_GET
@requires("view_console")
def user_timeline(request: HttpRequest, user_id: int) -> HttpResponse:
    user = _user_or_404(user_id)
    window = request.GET.get("window", "24h")
    if window not in diagnosis.TIMELINE_WINDOWS:
        window = "24h"
    report = diagnosis.user_report(Actor.from_request(request), user, window)
    return render(
        request,
        "console/sync_timeline.html",
        {
            "monitored": user,
            "entries": report.entries,
            "window": window,
            "diagnosis": report.diagnosis,
            "windows": diagnosis.TIMELINE_WINDOWS,
        },
    )
