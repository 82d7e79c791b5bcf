from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from integrations.microsoft.models import (
    Credential,
    GraphCall,
    NotificationAnswers,
    NotificationInbox,
    Subscription,
    SyncState,
)
from portal.access.actors import Actor
from portal.access.decorators import requires
from portal.access.roles import ROLES
from portal.alerts import measurements, rules
from portal.alerts.rules import (
    EVENT_BACKLOG,
    INBOX_MINUTES,
    MESSAGES_FAILED,
    QUEUED_MINUTES,
    SLOW_ANSWERS,
)
from portal.alerts.services import active_alerts
from portal.audit.models import AuditEvent
from portal.audit.services import record
from portal.console import metrics
from portal.console.charts import dashboard_charts
from portal.console.forms import AuditFilterForm
from portal.console.metrics import humanize_seconds
from portal.console.paging import empty_page, keyset_page
from portal.health import WORKER_STALE_AFTER, worker_heartbeat_age
from portal.jobs.stats import queue_metrics
from portal.runtime.registry import get as get_setting

AUDIT_PAGE_SIZE = 50


@require_GET
@requires("view_console")
def dashboard(request: HttpRequest) -> HttpResponse:
    since = timezone.now() - timedelta(hours=24)
    users_by_role = dict(
        get_user_model()
        .objects.filter(is_active=True, groups__name__in=ROLES)
        .values_list("groups__name")
        .annotate(n=Count("id"))
    )
    recent = AuditEvent.objects.filter(created_at__gte=since)
    context = {
        "users_by_role": [(role, users_by_role.get(role, 0)) for role in ROLES],
        "events_24h": recent.count(),
        "denied_24h": recent.filter(outcome=AuditEvent.Outcome.DENIED).count(),
        "failed_logins_24h": recent.filter(
            action="auth.login", outcome=AuditEvent.Outcome.FAILURE
        ).count(),
        "locked_out": AccessAttempt.objects.filter(
            failures_since_start__gte=settings.AXES_FAILURE_LIMIT,
            attempt_time__gte=timezone.now() - settings.AXES_COOLOFF_TIME,
        ).count(),
        "latest_events": AuditEvent.objects.all()[:8]
        if request.user.has_perm("access.view_audit")
        else [],
    }
    context.update(_integration_health())
    context["active_alerts"] = active_alerts()
    context["charts"] = dashboard_charts()
    context["gateway_tiles"] = _gateway_tiles(request, context["gateway"])
    template = "console/dashboard.html#health" if request.htmx else "console/dashboard.html"
    return render(request, template, context)


def _gateway_tiles(request: HttpRequest, gateway: dict[str, Any]) -> list[dict[str, Any]]:
    """The Fleet gateway's four tiles, coloured by their alerts' thresholds; each links to
    the page that fixes it when the person may open that page."""
    user = request.user
    messages = reverse("console:messages") if user.has_perm("access.view_messages") else ""
    endpoints = (
        reverse("console:event_endpoints") if user.has_perm("access.manage_event_endpoints") else ""
    )
    failed, oldest = gateway["messagesFailedLastHour"], gateway["oldestQueuedMessageSeconds"]
    failing, backlog = gateway["endpointsFailing"], gateway["eventBacklog"]
    return [
        {
            "num": failed,
            "label": "messages failed (1 h)",
            "state": "bad" if failed > get_setting(MESSAGES_FAILED) else "warn" if failed else "",
            "href": messages and f"{messages}?status=failed",
        },
        {
            "num": humanize_seconds(oldest),
            "label": "no message waiting to be sent" if oldest is None else "oldest unsent message",
            "state": "bad" if oldest and oldest > get_setting(QUEUED_MINUTES) * 60 else "",
            "href": messages and f"{messages}?status=queued",
        },
        {
            "num": failing,
            "label": "event endpoints failing or disabled",
            "state": "bad" if failing else "",
            "href": endpoints,
        },
        {
            "num": backlog,
            "label": "events waiting for delivery",
            "state": "bad" if backlog > get_setting(EVENT_BACKLOG) else "warn" if backlog else "",
            "href": endpoints,
        },
    ]


# Workers beat every 30 s while busy and once a minute when idle (portal.health).
WORKER_STALE_SECONDS = WORKER_STALE_AFTER.total_seconds()


def _integration_health() -> dict[str, Any]:
    """Graph-side tiles. Read from the database only: a dead Graph must not slow this page.

    The figures and thresholds are the alerts' own (QuerySet methods, runtime settings), so a
    tile and its alert never disagree."""

    window = GraphCall.objects.last_hours(1).figures()
    heartbeat = worker_heartbeat_age()
    active = Credential.objects.active().first()
    expires_in = active.expires_in if active else None
    days_left = expires_in.days if expires_in is not None else None
    lag = SyncState.objects.health()
    thresholds = rules.thresholds()
    gateway = measurements.gateway_figures()
    if window.total == 0:
        graph_state, graph_text = "unknown", "no Graph calls in the last hour"
    elif window.last_success_at is None:
        graph_state, graph_text = "bad", "no successful call in the last hour"
    elif (window.success_rate or 0) < thresholds["success_rate"]:
        graph_state, graph_text = "warn", f"{window.success_rate}% of calls succeeded"
    else:
        since_success = (timezone.now() - window.last_success_at).total_seconds()
        graph_state = "ok"
        graph_text = f"last success {metrics.humanize_seconds(since_success)} ago"
    if active is None:
        token_state, token_text = "bad", "no active client secret"
    elif active.configuration_mismatch():
        token_state, token_text = "bad", active.configuration_mismatch()
    elif active.last_error:
        token_state, token_text = "bad", active.last_error
    elif days_left is not None and days_left < thresholds["secret_days"]:
        token_state, token_text = "warn", f"secret expires in {days_left} days"
    else:
        token_state, token_text = "ok", f"secret …{active.fingerprint} active"
    if heartbeat is None:
        worker_state, worker_text = "bad", "no worker has ever reported"
    elif heartbeat > WORKER_STALE_SECONDS:
        worker_state = "bad"
        worker_text = f"last heartbeat {metrics.humanize_seconds(heartbeat)} ago"
    else:
        worker_state, worker_text = "ok", f"heartbeat {metrics.humanize_seconds(heartbeat)} ago"
    # The inbox is the queue: notifications wait there for the drain, not as jobs.
    inbox_age = NotificationInbox.objects.oldest_pending_seconds()
    if inbox_age is None:
        inbox_state, inbox_text = "ok", "no notification waiting"
    else:
        waiting = NotificationInbox.objects.pending().count()
        inbox_text = f"{waiting} waiting, oldest {humanize_seconds(inbox_age)}"
        inbox_state = "ok" if inbox_age < 60 else "warn"
        if inbox_age > get_setting(INBOX_MINUTES) * 60:
            inbox_state, inbox_text = "bad", f"{inbox_text}: is the inbox drain running?"
    hours = thresholds["subscription_hours"]
    return {
        "health": [
            {"name": "Token", "state": token_state, "text": token_text},
            {"name": "Graph", "state": graph_state, "text": graph_text},
            {"name": "Worker", "state": worker_state, "text": worker_text},
            {"name": "Inbox", "state": inbox_state, "text": inbox_text},
            _receiver_tile(),
        ],
        "graph": window,
        "queue": queue_metrics(by_type=False),
        "gateway": gateway,
        "thresholds": thresholds,
        "expiring": Subscription.objects.expiring_within(timedelta(hours=hours)).count(),
        "sync": lag,
        "sync_lag_text": metrics.humanize_seconds(lag["lag_seconds"]),
        "secret": {"active": active, "days_left": days_left},
        "tenant": settings.TENANT_LABEL or "(no tenant label set)",
    }


def _receiver_tile() -> dict[str, str]:
    """Graph's rule for slow endpoints, as the notification_answers_slow alert reads it."""
    answers = NotificationAnswers.objects.figures()
    if not answers.answered:
        return {"name": "Receiver", "state": "ok", "text": "no notification in the last 10 min"}
    share = answers.slow_percent or 0.0
    state = "ok"
    if share > get_setting(SLOW_ANSWERS):
        state = "bad" if answers.answered >= rules.MIN_ANSWERS_FOR_SLOW_SHARE else "warn"
    return {
        "name": "Receiver",
        "state": state,
        "text": f"{share:.1f} % of {answers.answered} answers slow (10 min)",
    }


@require_GET
@requires("view_audit")
def audit_log(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    page = (
        keyset_page(
            request,
            form.filter(AuditEvent.objects.all()),
            form.cleaned_data.get("before"),
            AUDIT_PAGE_SIZE,
        )
        if form.is_valid()
        else empty_page(request)
    )
    context = {
        "form": form,
        "events": page.rows,
        **page.context(),
        "can_export": request.user.has_perm("access.export_audit"),
    }
    template = "console/audit.html#results" if request.htmx else "console/audit.html"
    return render(request, template, context)


class _Echo:
    def write(self, value: str) -> str:
        return value


CSV_COLUMNS = (
    "id",
    "created_at",
    "actor_type",
    "actor_name",
    "actor_role",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "reason",
    "ip",
    "request_id",
    "params",
    "prev_hash",
    "hash",
)


def _csv_rows(queryset: Any) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(CSV_COLUMNS)
    for event in queryset.iterator(chunk_size=2000):
        row = []
        for column in CSV_COLUMNS:
            value = getattr(event, column)
            row.append(value.isoformat() if column == "created_at" else value)
        yield writer.writerow(_defuse_formulas(row))


def _defuse_formulas(row: list[Any]) -> list[Any]:
    # Spreadsheet programs run cells starting with these characters as formulas.
    return [
        f"'{value}" if isinstance(value, str) and value[:1] in "=+-@\t\r" else value
        for value in row
    ]


@require_GET
@requires("export_audit")
def audit_export(request: HttpRequest) -> HttpResponse:
    form = AuditFilterForm(request.GET)
    if not form.is_valid():
        return HttpResponse(
            "Invalid filters: " + "; ".join(f"{k}: {' '.join(v)}" for k, v in form.errors.items()),
            status=400,
            content_type="text/plain",
        )
    queryset = form.filter(AuditEvent.objects.all()).order_by("id")
    filters = {k: v for k, v in request.GET.items() if v}
    with transaction.atomic():
        # The export is itself recorded, before any row leaves the building.
        upto = AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0
        record(
            "audit.export",
            actor=Actor.from_request(request),
            target_type="audit_log",
            params={"filters": filters, "up_to_event": upto},
        )
    queryset = queryset.filter(id__lte=upto)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(_csv_rows(queryset), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="audit-{stamp}.csv"'
    return response
