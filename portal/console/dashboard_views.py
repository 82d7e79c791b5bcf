"""The dashboard: health tiles, the Fleet gateway's figures, active alerts and the latest audit
events, read from the database only so a dead Graph cannot slow the first page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.template.defaultfilters import pluralize
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET

from integrations.microsoft import inbox, probe
from integrations.microsoft.models import (
    Credential,
    GraphCall,
    NotificationAnswers,
    NotificationInbox,
    Probe,
    Subscription,
    SyncState,
)
from integrations.microsoft.teams_sender import current_delegated_account
from portal.access.decorators import requires
from portal.access.roles import ROLES
from portal.alerts import measurements, rules, token_health
from portal.alerts.models import TokenHealth
from portal.alerts.rules import (
    AUDIT_STREAM_MINUTES,
    EVENT_BACKLOG,
    INBOX_MINUTES,
    QUEUED_MINUTES,
    SLOW_ANSWERS,
)
from portal.alerts.services import active_alerts, evaluate_if_overdue
from portal.audit.models import AuditEvent, AuditStreamCursor
from portal.console import metrics
from portal.console.charts import dashboard_charts, unchanged_charts
from portal.console.htmx import HtmxHttpRequest
from portal.console.metrics import humanize_seconds
from portal.console.navigation import may_open
from portal.jobs.liveness import worker_heartbeat_age
from portal.jobs.stats import queue_metrics
from portal.runtime.registry import get as get_setting


@require_GET
@requires("view_console")
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
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
    evaluate_if_overdue()
    context.update(_integration_health())
    alerts_url = reverse("console:alerts")
    # Each name links to the page that fixes it, or to the Alerts page for whoever may not
    # open that page.
    context["active_alerts"] = [
        {
            "alert": firing.alert,
            "rule": firing.rule,
            "href": _openable(request, str(firing.rule.link)) or alerts_url,
        }
        for firing in active_alerts()
    ]
    context["alerts_url"] = alerts_url
    context["health"] += _audit_stream_health()
    for item in context["health"]:
        item["href"] = _openable(request, item["href"])
    # What is not set up yet (no tenant, no Teams sender, no probe mailbox), as steps.
    context["setup_steps"] = [
        {**item, "step": _sentence_part(item["text"].removeprefix("not set up: "))}
        for item in context["health"]
        if item["state"] == "unset"
    ]
    # The live refresh sends the stamp of the charts it shows: unchanged (same range, zone,
    # minute and newest sample), the fragment tells htmx to keep them instead of redrawing.
    now = timezone.now()
    range_key = request.GET.get("range")
    kept = unchanged_charts(range_key, request.GET.get("drawn"), now) if request.htmx else None
    context["charts"] = kept or dashboard_charts(range_key, request.user, now=now)
    context["gateway_tiles"] = _gateway_tiles(request, context["gateway"])
    template = "console/dashboard.html#health" if request.htmx else "console/dashboard.html"
    return render(request, template, context)


def _sentence_part(text: str) -> str:
    """ "No probe mailbox …" read after "Probe: " as "no probe mailbox …"."""
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _audit_stream_health() -> list[dict[str, Any]]:
    """One tile for the audit stream's sink furthest behind (none when no sink is set)."""
    worst = max(
        AuditStreamCursor.objects.lags(settings.AUDIT_STREAM_SINKS),
        key=lambda lag: lag.lag_seconds,
        default=None,
    )
    if worst is None:
        return []
    if not worst.pending:
        state, text = "ok", "every audit record shipped"
    else:
        state = "warn" if worst.lag_seconds <= get_setting(AUDIT_STREAM_MINUTES) * 60 else "bad"
        text = (
            f"{worst.pending} record{pluralize(worst.pending)} to ship, oldest "
            f"{humanize_seconds(worst.lag_seconds)}"
        )
        if worst.last_error:
            state, text = "bad", f"{text}; the sink fails: {worst.last_error}"
    return [_tile("Audit stream", state, text, "console:alerts")]


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
            # The alert judges the short window; an hour's failures are worth a look.
            "state": "warn" if failed else "",
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


def _integration_health() -> dict[str, Any]:
    """Graph-side tiles. Read from the database only: a dead Graph must not slow this page.

    The figures and thresholds are the alerts' own (QuerySet methods, runtime settings), so a
    tile and its alert never disagree."""

    window = GraphCall.objects.last_hours(1).figures()
    recent = GraphCall.objects.last_seconds(rules.alert_window()).figures()
    heartbeat = worker_heartbeat_age()
    active = Credential.objects.active().first()
    expires_in = active.expires_in if active else None
    days_left = expires_in.days if expires_in is not None else None
    lag = SyncState.objects.health()
    thresholds = rules.thresholds()
    gateway = measurements.gateway_figures()
    refused = TokenHealth.objects.active_refusal()
    failing_share = 100.0 * (recent.unavailable_ratio or 0.0)
    if recent.unavailable >= rules.MIN_CALLS_FOR_ERROR_RATE and failing_share > get_setting(
        rules.ERROR_RATE
    ):
        graph_state = "bad"
        graph_text = (
            f"{recent.unavailable} of {recent.total} call{pluralize(recent.total)} in the last "
            f"{humanize_seconds(rules.alert_window())} got a 5xx or no answer"
        )
    elif window.total == 0:
        graph_state, graph_text = "ok", "no Graph calls in the last hour (nothing to do)"
    elif window.last_success_at is None:
        graph_state, graph_text = "bad", "no successful call in the last hour"
    else:
        since_success = (timezone.now() - window.last_success_at).total_seconds()
        graph_state = "ok"
        graph_text = f"last success {metrics.humanize_seconds(since_success)} ago"
    if active is None and not token_health.configured():
        token_state, token_text = "unset", "not set up: no tenant connected"
    elif active is None:
        token_state, token_text = "bad", "no active client secret"
    elif active.configuration_mismatch():
        token_state, token_text = "bad", active.configuration_mismatch()
    elif refused is not None:
        token_state = "bad"
        token_text = f"Microsoft sign-in refused …{active.fingerprint}: {refused.reason}"
    elif active.last_error:
        token_state, token_text = "bad", active.last_error
    elif days_left is not None and days_left < thresholds["secret_days"]:
        token_state = "warn"
        token_text = f"secret expires in {days_left} day{pluralize(days_left)}"
    else:
        token_state, token_text = "ok", f"secret …{active.fingerprint} active"
    if heartbeat is None:
        worker_state, worker_text = "bad", "no worker has ever reported"
    elif heartbeat > get_setting(rules.WORKER_MINUTES) * 60:
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
        if inbox.paused():
            inbox_text = f"{inbox_text}; processing is paused"
    hours = thresholds["subscription_hours"]
    return {
        "health": [
            _tile("Token", token_state, token_text, "console:credentials", "#wizard-title"),
            _tile("Graph", graph_state, graph_text, "console:graph_calls", "?window=1h"),
            _tile("Worker", worker_state, worker_text, "console:jobs", "?status=pending"),
            _tile("Inbox", inbox_state, inbox_text, "console:jobs", "#job-types"),
            _receiver_tile(),
            _teams_sender_tile(),
            _probe_tile(),
        ],
        "graph": window,
        "recent": recent,
        "window_text": humanize_seconds(rules.alert_window()),
        "queue": queue_metrics(by_type=False),
        "gateway": gateway,
        "thresholds": thresholds,
        "expiring": Subscription.objects.expiring_within(timedelta(hours=hours)).count(),
        "sync": lag,
        "sync_lag_text": metrics.humanize_seconds(lag["lag_seconds"]),
        "secret": {"active": active, "days_left": days_left},
        "tenant": settings.TENANT_LABEL or "(no tenant label set)",
    }


def _probe_tile() -> dict[str, str]:
    """The end-to-end probe's latest stage latencies (or what to set up), linked to its page."""
    problem = probe.setup_problem()
    if problem:
        return _tile("Probe", "unset", f"not set up: {problem}", "console:probe")
    by_channel = Probe.objects.figures_by_channel()
    if not by_channel:
        return _tile("Probe", "unknown", "no probe has finished yet", "console:probe")
    lines = []
    for channel, figures in by_channel.items():
        lines.append(
            f"{Probe.Channel(channel).label}: {Probe.Status(figures.status).label.lower()}, "
            f"sent {_secs(figures.send_seconds)}, notification "
            f"{_secs(figures.notification_seconds)}, delta {_secs(figures.delta_seconds)}"
        )
    arrived = all(f.status == Probe.Status.MEASURED for f in by_channel.values())
    return _tile("Probe", "ok" if arrived else "bad", "; ".join(lines), "console:probe")


def _secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} s"


def _receiver_tile() -> dict[str, str]:
    """Graph's rule for slow endpoints, as the notification_answers_slow alert reads it."""
    answers = NotificationAnswers.objects.figures()
    if not answers.answered:
        return _tile("Receiver", "ok", "no notification in the last 10 min", "console:verify")
    share = answers.slow_percent or 0.0
    state = "ok"
    if share > get_setting(SLOW_ANSWERS):
        state = "bad" if answers.answered >= rules.MIN_ANSWERS_FOR_SLOW_SHARE else "warn"
    text = f"{share:.1f} % of {answers.answered} answer{pluralize(answers.answered)} slow (10 min)"
    return _tile("Receiver", state, text, "console:verify")


def _openable(request: HttpRequest, url: str) -> str:
    return url if url and may_open(request.user, url) else ""


def _tile(name: str, state: str, text: str, page: str, anchor: str = "") -> dict[str, str]:
    """A health line; one that is not OK links to the page that fixes it."""
    link = {"unset": "Set up", "bad": "Fix", "warn": "Look"}.get(state, "")
    return {
        "name": name,
        "state": state,
        "text": text,
        "href": reverse(page) + anchor if link else "",
        "link_text": link,
    }


def _teams_sender_tile() -> dict[str, str]:
    """Not connected is not a failure: Teams sends simply wait for an admin to set it up."""
    sender = current_delegated_account()
    if sender is None:
        state, text = "unset", "not set up: no account connected to send Teams messages"
    elif sender.last_error:
        state, text = "bad", sender.last_error
    else:
        state, text = "ok", f"{sender.upn} connected"
    return _tile("Teams sender", state, text, "console:credentials", "#sender-title")
