"""Messages: outbound e-mails and Teams messages by status, failures grouped by error (a group
is retried through the jobs' bulk retry: preview, typed confirmation, progress, cancel), a
detail page with attempts, Graph calls and audit trail, resend and cancel.

Message text (subject and body) is shown only to roles with `view_message_bodies`
(operators and admins); viewers and support see status, recipients and errors.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import Count, Max, Q
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from integrations.microsoft.messaging import service
from integrations.microsoft.messaging.errors import MessagingError
from integrations.microsoft.models import GraphCall, MonitoredUser, OutboundMessage
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.audit.models import AuditEvent
from portal.console.forms import start_of_day
from portal.console.paging import empty_page, keyset_page
from portal.jobs.models import Job, JobAttempt

PAGE_SIZE = 50
ALL = "all"  # the tab (and status filter value) for every status
STATUS_TABS = [
    ALL,
    OutboundMessage.Status.FAILED,
    OutboundMessage.Status.SENDING,
    OutboundMessage.Status.QUEUED,
    OutboundMessage.Status.SENT,
    OutboundMessage.Status.CANCELLED,
]


class MessageFilter(forms.Form):
    status = forms.ChoiceField(
        choices=[(ALL, "All"), *OutboundMessage.Status.choices], required=False
    )
    channel = forms.ChoiceField(
        choices=[("", "any"), ("mail", "E-mail"), ("teams", "Teams")], required=False
    )
    client = forms.CharField(required=False, max_length=150, label="Sent by")
    recipient = forms.CharField(required=False, max_length=320, label="Recipient, chat or channel")
    sender = forms.CharField(required=False, max_length=255)
    key = forms.CharField(required=False, max_length=255, label="Idempotency key")
    date_from = forms.DateField(
        required=False, label="Created from", widget=forms.DateInput(attrs={"type": "date"})
    )
    before = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)

    def tab(self) -> str:
        """The tab: as asked; else every status when looking for something (a recipient, a
        key…), the failures when just opening the page."""
        data = self.cleaned_data
        if data.get("status"):
            return data["status"]
        searching = any(data.get(name) for name in ("client", "recipient", "sender", "key"))
        return ALL if searching else OutboundMessage.Status.FAILED

    def queryset(self) -> Any:
        data = self.cleaned_data
        queryset = OutboundMessage.objects.select_related("job")
        if self.tab() != ALL:
            queryset = queryset.filter(status=self.tab())
        if data.get("channel"):
            queryset = queryset.filter(channel__in=service.CHANNELS[data["channel"]])
        if data.get("client"):
            queryset = queryset.filter(created_by=data["client"])
        if data.get("recipient"):
            value = data["recipient"]
            queryset = queryset.filter(
                Q(to_recipients__icontains=value)
                | Q(chat_id=value)
                | Q(to_user__iexact=value)
                | Q(channel_id=value)
            )
        if data.get("sender"):
            queryset = queryset.filter(sender__iexact=data["sender"])
        if data.get("key"):
            queryset = queryset.filter(pk__in=OutboundMessage.objects.with_key(data["key"]))
        if data.get("date_from"):
            queryset = queryset.filter(created_at__gte=start_of_day(data["date_from"]))
        return queryset


def _tab_query(params: QueryDict, status: str) -> str:
    query = params.copy()
    query.pop("before", None)
    query["status"] = status
    return query.urlencode()


@require_GET
@requires("view_messages")
def message_list(request: HttpRequest) -> HttpResponse:
    form = MessageFilter(request.GET)
    status: str = OutboundMessage.Status.FAILED
    groups, page = [], empty_page(request)
    if form.is_valid():
        status = form.tab()
        queryset = form.queryset()
        page = keyset_page(request, queryset, form.cleaned_data.get("before"), PAGE_SIZE)
        if status in (OutboundMessage.Status.FAILED, OutboundMessage.Status.SENDING):
            groups = list(
                queryset.exclude(job__isnull=True)
                .values("job__error_signature", "job__job_type", "job__status")
                .annotate(count=Count("id"), latest=Max("id"))
                .order_by("-count")[:10]
            )
            examples = dict(
                OutboundMessage.objects.filter(pk__in=[g["latest"] for g in groups]).values_list(
                    "pk", "last_error"
                )
            )
            for group in groups:
                group["example"] = examples.get(group["latest"], "")
    counts = dict(OutboundMessage.objects.values_list("status").annotate(n=Count("id")).order_by())
    counts[ALL] = sum(counts.values())
    return render(
        request,
        "console/messages.html",
        {
            "form": form,
            "status": status,
            "rows": page.rows,
            "groups": groups,
            "tabs": [
                (tab, counts.get(tab, 0), _tab_query(request.GET, tab)) for tab in STATUS_TABS
            ],
            **page.context(),
            "can_retry_all": request.user.has_perm("access.retry_all_jobs"),
        },
    )


def _message_or_404(message_id: int) -> OutboundMessage:
    message = (
        OutboundMessage.objects.select_related("job", "resend_of").filter(pk=message_id).first()
    )
    if message is None:
        raise Http404(f"There is no message #{message_id}.")
    return message


def _mailbox_names(sender: str) -> set[str]:
    """The names Graph calls may carry for a sending mailbox: calls name a monitored mailbox by
    its Graph id (lower case), any other by the address as given (lower case)."""
    sender = sender.strip().lower()
    user = MonitoredUser.objects.lookup(sender) if sender else None
    return {sender, (user.graph_id or "").lower() if user else ""} - {""}


@require_GET
@requires("view_messages")
def message_detail(request: HttpRequest, message_id: int) -> HttpResponse:
    message = _message_or_404(message_id)
    job: Job | None = message.job
    graph_calls: list[GraphCall] = []
    if job is not None and job.started_at:
        window = GraphCall.objects.filter(created_at__gte=min(job.created_at, job.started_at))
        if job.finished_at:
            window = window.filter(created_at__lte=job.finished_at)
        mailboxes = _mailbox_names(message.sender) if message.channel == "mail" else set()
        graph_calls = list(
            (
                window.filter(mailbox__in=mailboxes)
                if mailboxes
                else window.filter(
                    route__icontains="/chats" if message.channel == "teams_chat" else "/teams"
                )
            ).order_by("-id")[:30]
        )
    return render(
        request,
        "console/message_detail.html",
        {
            "message": message,
            "job": job,
            "api_key": message.client_key,
            "attempts": JobAttempt.objects.filter(job=job).order_by("-number") if job else [],
            "graph_calls": graph_calls,
            "audit": AuditEvent.objects.filter(
                target_type="outbound_message", target_id=str(message.pk)
            )[:20]
            if request.user.has_perm("access.view_audit")
            else None,
            "show_body": request.user.has_perm("access.view_message_bodies"),
            "can_send": request.user.has_perm("access.send_messages"),
            "resends": message.resends.order_by("-id")[:10],
        },
    )


@require_POST
@requires("send_messages")
def message_resend(request: HttpRequest, message_id: int) -> HttpResponse:
    try:
        new = service.resend(Actor.from_request(request), message_id)
    except MessagingError as exc:
        messages.error(request, exc.reason)
        return redirect("console:message", message_id=message_id)
    messages.success(request, f"Queued message #{new.pk} as a resend of #{message_id}.")
    return redirect("console:message", message_id=new.pk)


@require_POST
@requires("send_messages")
def message_cancel(request: HttpRequest, message_id: int) -> HttpResponse:
    try:
        service.cancel(Actor.from_request(request), message_id)
    except MessagingError as exc:
        messages.error(request, exc.reason)
    else:
        messages.success(request, f"Message #{message_id} is cancelled; it will not be sent.")
    return redirect("console:message", message_id=message_id)
