"""Subscriptions: database and Graph side by side, expiry against the resource's maximum,
renew / recreate / delete, bulk renew, set up all, clean up, and the lifecycle event feed.

The list reads only the database. Graph is asked only when an operator asks for it (the
comparison, a dry run, an action), never by a page load or the live refresh.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from integrations.graph import kinds
from integrations.graph.errors import GraphError
from integrations.microsoft import bulk_kinds, diagnosis, subscriptions
from integrations.microsoft.models import LifecycleEvent, ResourceKind, Subscription
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.alerts import rules
from portal.audit.services import record
from portal.console.htmx import HtmxHttpRequest
from portal.console.navigation import redirect_back
from portal.console.paging import empty_page, keyset_page
from portal.jobs.models import Job
from portal.jobs.runner import enqueue

PAGE_SIZE = 50
TYPED_CONFIRMATION_THRESHOLD = 20
SAMPLE_SIZE = 5


class SubscriptionFilter(forms.Form):
    state = forms.ChoiceField(required=False, choices=[("", "any"), *Subscription.State.choices])
    kind = forms.ChoiceField(
        required=False, label="Resource", choices=[("", "any"), *ResourceKind.choices]
    )
    # Up to the subscription_expiring alert's maximum threshold (the dashboard links here).
    expiring = forms.IntegerField(
        required=False, min_value=1, max_value=240, label="Expiring within (hours)"
    )
    user = forms.CharField(required=False, max_length=255, label="User starts with")
    # One subscription (the search box links its hits here).
    id = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def queryset(self) -> Any:
        data = self.cleaned_data
        queryset = Subscription.objects.select_related("monitored_user")
        if data.get("state"):
            queryset = queryset.filter(state=data["state"])
        if data.get("kind"):
            queryset = queryset.filter(kind=data["kind"])
        if data.get("expiring"):
            queryset = queryset.expiring_within(timedelta(hours=data["expiring"]))
        if data.get("user"):
            queryset = queryset.filter(monitored_user__identifier__istartswith=data["user"])
        if data.get("id"):
            queryset = queryset.filter(pk=data["id"])
        return queryset


def decorate(sub: Subscription, now: Any) -> Subscription:
    """Expiry countdown against the resource's maximum lifetime, and the renewal time."""
    spec = kinds.KINDS.get(sub.kind)
    maximum = spec.lifetime_minutes * 60 if spec else None
    # Only a live subscription has a lifetime left: a missing or replaced one has none,
    # whatever expiry it once had.
    live = sub.state == Subscription.State.ACTIVE
    left = (sub.expiration - now).total_seconds() if sub.expiration and live else None
    sub.seconds_left = left  # type: ignore[attr-defined]
    sub.max_seconds = maximum  # type: ignore[attr-defined]
    sub.percent_left = (  # type: ignore[attr-defined]
        max(0, min(100, int(100 * left / maximum))) if left is not None and maximum else None
    )
    sub.renewal_due_at = subscriptions.renewal_due_at(sub)  # type: ignore[attr-defined]
    sub.expired = left is not None and left <= 0  # type: ignore[attr-defined]
    sub.expiring_soon = left is not None and 0 < left < 24 * 3600  # type: ignore[attr-defined]
    return sub


@require_GET
@requires("view_console")
def subscription_list(request: HtmxHttpRequest) -> HttpResponse:
    form = SubscriptionFilter(request.GET)
    page = (
        keyset_page(request, form.queryset(), form.cleaned_data.get("before"), PAGE_SIZE)
        if form.is_valid()
        else empty_page(request)
    )
    now = timezone.now()
    rows = [decorate(sub, now) for sub in page.rows]
    user = request.user
    context: dict[str, Any] = {
        "form": form,
        "rows": rows,
        **page.context(),
        "can_renew": user.has_perm("access.renew_subscription"),
        "can_recreate": user.has_perm("access.recreate_subscription"),
        "can_delete": user.has_perm("access.delete_subscription"),
        "can_setup": user.has_perm("access.setup_subscriptions"),
        "can_cleanup": user.has_perm("access.cleanup_subscriptions"),
    }
    if request.htmx and request.htmx.target == "subscriptions":
        return render(request, "console/subscriptions.html#subscriptions", context)
    expiring_hours = rules.thresholds()["subscription_hours"]
    context.update(
        {
            "counts": Subscription.objects.counts_by_state(),
            "missing": Subscription.objects.missing().count(),
            # The subscription_expiring alert's window, as on the dashboard.
            "expiring_hours": expiring_hours,
            "expiring": Subscription.objects.expiring_within(
                timedelta(hours=expiring_hours)
            ).count(),
            "events": LifecycleEvent.objects.select_related(
                "subscription__monitored_user", "job", "followup_job"
            )[:15],
            "kinds": kinds.KINDS.values(),
            "chat_mode": subscriptions.chat_mode(),
        }
    )
    return render(request, "console/subscriptions.html", context)


@require_GET
@requires("setup_subscriptions")
def subscription_compare(request: HtmxHttpRequest) -> HttpResponse:
    """Database and Graph side by side (one GET /subscriptions, paged by Graph)."""
    try:
        comparison = diagnosis.compare_with_graph(Actor.from_request(request))
    except diagnosis.CompareLimited as exc:
        response = HttpResponse(str(exc), status=429, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(exc.retry_after)
        return response
    context = {
        "pairs": comparison.pairs,
        "error": comparison.error,
        "in_step": comparison.in_step,
        "can_cleanup": request.user.has_perm("access.cleanup_subscriptions"),
    }
    template = (
        "console/subscription_compare.html#compare"
        if request.htmx
        else "console/subscription_compare.html"
    )
    return render(request, template, context)


def _get_or_404(subscription_id: int) -> Subscription:
    sub = Subscription.objects.select_related("monitored_user").filter(pk=subscription_id).first()
    if sub is None:
        raise Http404(f"There is no subscription #{subscription_id}.")
    return sub


def _back(request: HttpRequest) -> HttpResponse:
    return redirect_back(request, reverse("console:subscriptions"))


@require_POST
@requires("renew_subscription")
def subscription_renew(request: HttpRequest, subscription_id: int) -> HttpResponse:
    _get_or_404(subscription_id)
    try:
        sub = subscriptions.renew(Actor.from_request(request), subscription_id)
    except GraphError as exc:
        messages.error(request, f"Graph refused the renewal of #{subscription_id}: {exc.message}")
    else:
        messages.success(
            request,
            f"Subscription #{sub.pk} renewed: it now expires {sub.expiration:%Y-%m-%d %H:%M} UTC.",
        )
    return _back(request)


def _confirm(request: HttpRequest, sub: Subscription, action: str) -> HttpResponse:
    return render(
        request,
        "console/subscription_confirm.html",
        {"sub": decorate(sub, timezone.now()), "action": action},
    )


@requires("recreate_subscription")
def subscription_recreate(request: HttpRequest, subscription_id: int) -> HttpResponse:
    """GET: what recreating does. POST: do it."""
    sub = _get_or_404(subscription_id)
    if request.method != "POST":
        return _confirm(request, sub, "recreate")
    if sub.monitored_user is None:
        messages.error(
            request, "This subscription belongs to no monitored user: delete it instead."
        )
        return _back(request)
    try:
        new = subscriptions.recreate(Actor.from_request(request), subscription_id)
    except (GraphError, ValueError) as exc:
        messages.error(
            request, f"Recreating #{subscription_id} failed: {getattr(exc, 'message', exc)}"
        )
    else:
        messages.success(
            request,
            f"Recreated as #{new.pk} (Graph id {new.graph_id}); a delta "
            "sync catches up what was missed.",
        )
    return redirect("console:subscriptions")


@requires("delete_subscription")
def subscription_delete(request: HttpRequest, subscription_id: int) -> HttpResponse:
    """GET: what deleting does. POST: do it."""
    sub = _get_or_404(subscription_id)
    if request.method != "POST":
        return _confirm(request, sub, "delete")
    try:
        subscriptions.delete(Actor.from_request(request), subscription_id)
    except GraphError as exc:
        messages.error(request, f"Graph refused to delete #{subscription_id}: {exc.message}")
    else:
        messages.success(
            request,
            f"Subscription #{subscription_id} deleted in Graph and here. "
            "Set up all recreates it while its user is monitored.",
        )
    return redirect("console:subscriptions")


class BulkRenewForm(forms.Form):
    hours = forms.IntegerField(
        min_value=1, max_value=24 * 8, initial=24, label="Expiring within (hours)"
    )
    confirm_count = forms.CharField(required=False, max_length=12)


@requires("renew_subscription")
def subscription_bulk_renew(request: HttpRequest) -> HttpResponse:
    """GET: the impact (count and sample). POST: renew that frozen set as a background
    operation with progress (cancellable)."""
    form = BulkRenewForm(request.POST if request.method == "POST" else request.GET or None)
    if not form.is_valid():
        return render(
            request,
            "console/subscription_bulk_renew.html",
            {"form": form},
            status=400 if form.is_bound else 200,
        )
    hours = form.cleaned_data["hours"]
    matching = bulk_kinds.expiring(hours)
    count = matching.count()
    context: dict[str, Any] = {
        "form": form,
        "hours": hours,
        "count": count,
        "sample": [
            decorate(s, timezone.now())
            for s in matching.select_related("monitored_user").order_by("expiration")[:SAMPLE_SIZE]
        ],
        "needs_typing": count > TYPED_CONFIRMATION_THRESHOLD,
        "threshold": TYPED_CONFIRMATION_THRESHOLD,
    }
    if request.method != "POST":
        return render(request, "console/subscription_bulk_renew.html", context)
    if count == 0:
        messages.info(
            request, "No subscription expires in that window any more; nothing was renewed."
        )
        return redirect("console:subscriptions")
    if context["needs_typing"] and form.cleaned_data["confirm_count"].strip() != str(count):
        context["confirm_error"] = f"Type {count} to confirm."
        return render(request, "console/subscription_bulk_renew.html", context, status=400)
    operation = bulk_kinds.start_bulk_renew(Actor.from_request(request), hours)
    return redirect("console:bulk_operation", operation_id=operation.pk)


def _summary_action(request: HttpRequest, *, kind: str) -> HttpResponse:
    """Set up all / clean up: GET is a dry run (the impact), POST does it."""
    actor = Actor.from_request(request)
    service = subscriptions.setup if kind == "setup" else subscriptions.cleanup
    if request.method != "POST":
        summary = service(actor, dry_run=True)
        return render(
            request,
            "console/subscription_summary.html",
            {"summary": summary, "kind": kind, "lines": summary.lines()},
        )
    if request.POST.get("confirm") != "yes":
        messages.error(request, "Confirm first: the dry run shows what will change.")
        return redirect(
            "console:subscriptions_setup" if kind == "setup" else "console:subscriptions_cleanup"
        )
    # Graph calls for every monitored user: run it in the background and show its result.
    with transaction.atomic():
        job = enqueue(
            "graph.subscriptions_run",
            {"action": kind, "started_by": actor.name},
            created_by=actor.name,
        )
        record(f"webhooks.{kind}.start", actor=actor, target_type="job", target_id=job.pk)
    return redirect("console:subscriptions_run", job_id=job.pk)


@require_GET
@requires("view_console")
def subscriptions_run(request: HtmxHttpRequest, job_id: int) -> HttpResponse:
    job = Job.objects.filter(pk=job_id, job_type="graph.subscriptions_run").first()
    if job is None:
        raise Http404("No such run.")
    context = {"job": job, "kind": job.payload.get("action", "setup"), "result": job.result or {}}
    template = (
        "console/subscription_run.html#run" if request.htmx else "console/subscription_run.html"
    )
    return render(request, template, context)


@requires("setup_subscriptions")
def subscriptions_setup(request: HttpRequest) -> HttpResponse:
    return _summary_action(request, kind="setup")


@requires("cleanup_subscriptions")
def subscriptions_cleanup(request: HttpRequest) -> HttpResponse:
    return _summary_action(request, kind="cleanup")
