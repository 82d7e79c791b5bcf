"""Graph calls and rate limits: success rate, 429s by route and mailbox, backoff, recent calls.

GraphCall grows by millions of rows: every query is bounded by a time window on the indexed
created_at, and the list is keyset-paged by id. No exact COUNT(*) over the table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from integrations.microsoft import backoff
from integrations.microsoft.models import GraphCall, MonitoredUser
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.alerts import rules
from portal.alerts.models import MetricSample
from portal.console import metrics
from portal.console.htmx import HtmxHttpRequest
from portal.console.paging import empty_page, keyset_page

PAGE_SIZE = 50
WINDOWS = {"1h": 1, "24h": 24, "7d": 24 * 7}


class GraphCallFilter(forms.Form):
    # The default (24 h) first, so the form shows what an empty filter means.
    window = forms.ChoiceField(
        choices=[("24h", "last 24 hours"), ("1h", "last hour"), ("7d", "last 7 days")],
        required=False,
        label="Period",
    )
    status = forms.ChoiceField(
        required=False,
        label="Outcome",
        choices=[
            ("", "any"),
            ("ok", "success (2xx, 3xx)"),
            ("4xx", "client error (4xx)"),
            ("429", "429 throttled"),
            ("5xx", "server error (5xx)"),
            ("none", "no response"),
        ],
    )
    route = forms.CharField(required=False, max_length=300, label="Route starts with")
    mailbox = forms.CharField(required=False, max_length=255, label="Mailbox")
    throttled = forms.ChoiceField(
        required=False,
        label="Throttled",
        choices=[("", "any"), ("yes", "only 429s"), ("no", "no 429s")],
    )
    # The search box links a Graph request-id here; it finds the call whatever its age.
    request_id = forms.CharField(required=False, max_length=64, label="request-id")
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def hours(self) -> int:
        return WINDOWS.get(self.cleaned_data.get("window") or "24h", 24)

    def queryset(self) -> Any:
        data = self.cleaned_data
        if data.get("request_id"):
            return GraphCall.objects.filter(request_id=data["request_id"].strip())
        since = timezone.now() - timedelta(hours=self.hours())
        queryset = GraphCall.objects.since(since)
        status = data.get("status")
        if status == "ok":
            queryset = queryset.succeeded()
        elif status == "4xx":
            queryset = queryset.filter(status__gte=400, status__lt=500)
        elif status == "429":
            queryset = queryset.filter(status=429)
        elif status == "5xx":
            queryset = queryset.filter(status__gte=500)
        elif status == "none":
            queryset = queryset.filter(status__isnull=True)
        if data.get("route"):
            queryset = queryset.filter(route__startswith=data["route"])
        if data.get("mailbox"):
            # Calls name mailboxes by Graph id; operators know UPNs: either finds them.
            mailbox = data["mailbox"].strip().lower()
            user = MonitoredUser.objects.lookup(mailbox)
            names = (
                {mailbox, (user.graph_id or "").lower(), user.upn.lower()} if user else {mailbox}
            )
            queryset = queryset.filter(mailbox__in=names - {""})
        if data.get("throttled") == "yes":
            queryset = queryset.filter(throttled=True)
        elif data.get("throttled") == "no":
            queryset = queryset.filter(throttled=False)
        return queryset


def _fragment(request: HtmxHttpRequest) -> bool:
    return bool(request.htmx and request.htmx.target == "calls")


class MailboxBackoffForm(forms.Form):
    mailbox = forms.CharField(max_length=255, label="Mailbox (address or Graph id)")
    minutes = forms.IntegerField(
        min_value=backoff.MIN_MINUTES,
        max_value=backoff.MAX_MINUTES,
        initial=15,
        label="Minutes (1 to 1440)",
    )
    reason = forms.CharField(max_length=500, label="Reason")


@require_GET
@requires("view_console")
def graph_calls(request: HtmxHttpRequest) -> HttpResponse:
    return _graph_calls_page(
        request, MailboxBackoffForm(initial={"mailbox": request.GET.get("backoff", "")})
    )


@require_POST
@requires("pause_processing")
def mailbox_backoff(request: HtmxHttpRequest) -> HttpResponse:
    """Back off one mailbox; bad input re-renders the page with the form's errors (400)."""
    form = MailboxBackoffForm(request.POST)
    if form.is_valid():
        data = form.cleaned_data
        try:
            done = backoff.back_off_mailbox(
                Actor.from_request(request), data["mailbox"], data["minutes"], data["reason"]
            )
        except backoff.BackoffError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"Mailbox {done.mailbox} is backed off until {done.until:%H:%M:%S} UTC: no job "
                "calls Graph for it until then.",
            )
            return redirect(reverse("console:graph_calls") + "#backoff")
    return _graph_calls_page(request, form, status=400)


def _graph_calls_page(
    request: HtmxHttpRequest, backoff_form: MailboxBackoffForm, status: int = 200
) -> HttpResponse:
    form = GraphCallFilter(request.GET)
    page = (
        keyset_page(request, form.queryset(), form.cleaned_data.get("before"), PAGE_SIZE)
        if form.is_valid()
        else empty_page(request)
    )
    calls = page.rows
    by_mailbox = metrics.throttled_by("mailbox") if not _fragment(request) else []
    backoffs = metrics.backoff_windows() if not _fragment(request) else []
    # Graph ids → UPNs (one query for the whole page); an unknown id is shown as it is.
    upns = MonitoredUser.objects.upns_by_graph_id(
        [c.mailbox for c in calls]
        + [r["mailbox"] for r in by_mailbox]
        + [b.mailbox for b in backoffs]
    )
    for call in calls:
        call.mailbox_label = upns.get(call.mailbox, call.mailbox)
    for row in by_mailbox:
        row["label"] = upns.get(row["mailbox"], row["mailbox"])
    for window in backoffs:
        if window.mailbox:
            window.scope = f"mailbox {upns.get(window.mailbox, window.mailbox)}"
    context: dict[str, Any] = {
        "form": form,
        "calls": calls,
        **page.context(),
    }
    if _fragment(request):
        return render(request, "console/graph_calls.html#calls", context)
    context.update(
        {
            "hour": GraphCall.objects.last_hours(1).figures(),
            "thresholds": rules.thresholds(),
            # 24 hours from the per-minute samples (1,440 rows), not from millions of calls.
            "day": MetricSample.objects.graph_figures(timezone.now() - timedelta(hours=24)),
            "by_route": metrics.throttled_by("route"),
            "by_mailbox": by_mailbox,
            "backoffs": backoffs,
            "mailbox_backoffs": backoff.active_backoffs(),
            "backoff_form": backoff_form,
            "can_back_off": request.user.has_perm("access.pause_processing"),
        }
    )
    return render(request, "console/graph_calls.html", context, status=status)
