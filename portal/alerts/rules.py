"""The alert rules: the runbook's five plus secret expiry, worker down and audit chain.

Thresholds are runtime settings (Settings page), so an operator can tune them at 3 a.m.
without a deploy. deploy/prometheus/alerts.yml expresses the same rules in PromQL.

One module, about 700 lines, on purpose: it is the rule table, each rule's threshold setting
next to its evaluation and RULES listing them all, so a rule is read in one place; the figures
they judge are queryset methods on the models.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.template.defaultfilters import pluralize
from django.urls import reverse_lazy
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.text import format_lazy

from integrations.microsoft.models import (
    Credential,
    GraphCall,
    MonitoredUser,
    NotificationAnswers,
    NotificationInbox,
    OutboundMessage,
    Probe,
    Subscription,
)
from portal.alerts.models import AuditChainCheck, TokenHealth
from portal.approvals.models import ApprovalRequest
from portal.audit.models import AuditEvent, AuditStreamCursor
from portal.events.models import EventEndpoint
from portal.jobs.liveness import worker_heartbeat_age
from portal.jobs.models import Job
from portal.runtime.registry import SettingSpec, define, get


@dataclass(frozen=True)
class Verdict:
    firing: bool
    value: float | None
    threshold: float
    message: str


@dataclass(frozen=True)
class Rule:
    name: str
    title: str
    evaluate: Callable[[], Verdict]
    runbook: str  # what to do, shown with the alert
    # The page (and button) that fixes it: a lazy URL, with a query or an #anchor naming the
    # form or button; shown with the alert and as the dashboard banner's link.
    link: str | Promise = ""
    # A security alert: only admins may snooze it (snooze_security_alerts).
    security: bool = False


def _fix_at(url_name: str, rest: str = "") -> str | Promise:
    return format_lazy("{}{}", reverse_lazy(url_name), rest)


def _setting(key: str, label: str, help_text: str, default: int, maximum: int) -> str:
    define(SettingSpec(key, label, help_text, int, default, 1, maximum, group="Alerts"))
    return key


QUEUE = _setting(
    "ALERT_QUEUE_LENGTH",
    "Alert: queue length",
    "Fire when more jobs than this are due and not started (jobs waiting for their time or "
    "a retry's back-off are not counted).",
    1000,
    10_000_000,
)
DLQ = _setting(
    "ALERT_DEAD_LETTERS",
    "Alert: dead letters",
    "Fire when more jobs than this are dead.",
    100,
    10_000_000,
)
ERROR_RATE = _setting(
    "ALERT_ERROR_RATE_PERCENT",
    "Alert: Graph failing (%)",
    "Fire when more than this percentage of Graph calls in the alert window "
    "(ALERT_WINDOW_SECONDS, 3 minutes by default) got a 5xx or no answer at all (at least "
    f"{3} calls).",
    5,
    100,
)
THROTTLED = _setting(
    "ALERT_THROTTLED_IN_WINDOW",
    "Alert: 429s in the alert window",
    "Fire when Graph answered 429 more than this many times in the alert window "
    "(ALERT_WINDOW_SECONDS, 3 minutes by default).",
    10,
    1_000_000,
)
SUB_HOURS = _setting(
    "ALERT_SUBSCRIPTION_EXPIRY_HOURS",
    "Alert: subscription expiry (hours)",
    "Fire when an active subscription expires within this many hours "
    "(renewal should have happened long before).",
    24,
    240,
)
SECRET_DAYS = _setting(
    "ALERT_SECRET_EXPIRY_DAYS",
    "Alert: client secret expiry (days)",
    "Fire when the active client secret expires within this many days.",
    14,
    365,
)
WORKER_MINUTES = _setting(
    "ALERT_WORKER_STALE_MINUTES",
    "Alert: worker silent (minutes)",
    "Fire when no worker has reported a heartbeat for this long (idle workers report every "
    "minute).",
    2,
    60,
)
MESSAGES_FAILED = _setting(
    "ALERT_MESSAGES_FAILED_IN_WINDOW",
    "Alert: messages failed in the alert window",
    "Fire when more outbound e-mails and Teams messages than this failed in the alert window "
    "(ALERT_WINDOW_SECONDS, 3 minutes by default).",
    10,
    1_000_000,
)
QUEUED_MINUTES = _setting(
    "ALERT_OLDEST_QUEUED_MESSAGE_MINUTES",
    "Alert: oldest queued message (minutes)",
    "Fire when a message has waited this long without being sent.",
    30,
    10_080,
)
INBOX_MINUTES = _setting(
    "ALERT_INBOX_OLDEST_MINUTES",
    "Alert: oldest unprocessed notification (minutes)",
    "Fire when a received change notification has waited this long for the inbox drain "
    "(a running drain takes it within a second; the minute sweep within a minute).",
    2,
    10_080,
)
EVENT_BACKLOG = _setting(
    "ALERT_EVENT_BACKLOG",
    "Alert: event backlog",
    "Fire when more events than this wait for delivery to event endpoints.",
    10_000,
    100_000_000,
)
AUDIT_STREAM_MINUTES = _setting(
    "ALERT_AUDIT_STREAM_LAG_MINUTES",
    "Alert: audit stream behind (minutes)",
    "Fire when an audit record has waited this long to be shipped to a sink.",
    15,
    10_080,
)
MIN_CALLS_FOR_ERROR_RATE = 3
SLOW_ANSWERS = _setting(
    "ALERT_SLOW_ANSWERS_PERCENT",
    "Alert: slow notification answers (%)",
    "Fire when more than this percentage of notification requests in the last 10 minutes "
    "were answered slower than NOTIFICATION_SLOW_ANSWER_SECONDS (Graph delays notifications "
    "past 10 % and drops them past 15 %).",
    5,
    100,
)
MIN_ANSWERS_FOR_SLOW_SHARE = 20
SUB_MISSING_MINUTES = _setting(
    "ALERT_SUBSCRIPTION_MISSING_MINUTES",
    "Alert: subscription missing in Graph (minutes)",
    "Fire when a subscription Graph no longer has is still not recreated after this long "
    "(the portal compares with Graph every 5 minutes and recreates what is missing).",
    15,
    1440,
)


def alert_window() -> float:
    """Seconds the rate rules look back (settings.ALERT_WINDOW_SECONDS, read at call time)."""
    return float(settings.ALERT_WINDOW_SECONDS)


def _window_text() -> str:
    seconds = int(alert_window())
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"


def rule_named(name: str) -> Rule | None:
    return next((rule for rule in RULES if rule.name == name), None)


def _are(count: int) -> str:
    return "is" if count == 1 else "are"


def thresholds() -> dict[str, int]:
    """The rules' current thresholds, for pages that colour a tile by its alert."""
    return {
        "queue": get(QUEUE),
        "dead": get(DLQ),
        "success_rate": 100 - get(ERROR_RATE),
        "throttled": get(THROTTLED),
        "subscription_hours": get(SUB_HOURS),
        "secret_days": get(SECRET_DAYS),
    }


def _queue() -> Verdict:
    value, threshold = Job.objects.queue_length(), get(QUEUE)
    return Verdict(
        value > threshold,
        value,
        threshold,
        f"{value} job{pluralize(value)} {_are(value)} due and not started (threshold {threshold}).",
    )


def _dead() -> Verdict:
    value, threshold = Job.objects.dead_letters(), get(DLQ)
    return Verdict(
        value > threshold,
        value,
        threshold,
        f"{value} job{pluralize(value)} {_are(value)} in the dead-letter queue (threshold "
        f"{threshold}).",
    )


def _graph_failing() -> Verdict:
    calls = GraphCall.objects.last_seconds(alert_window()).figures()
    threshold = get(ERROR_RATE)
    rate = 100.0 * (calls.unavailable_ratio or 0.0)
    firing = calls.unavailable >= MIN_CALLS_FOR_ERROR_RATE and rate > threshold
    return Verdict(
        firing,
        round(rate, 2),
        threshold,
        f"{calls.server_errors} of {calls.total} Graph calls in the last {_window_text()} got "
        f"a 5xx and {calls.no_response} no answer ({rate:.1f} %, threshold {threshold} %).",
    )


def _throttled() -> Verdict:
    calls = GraphCall.objects.last_seconds(alert_window())
    value, threshold = calls.figures().throttled, get(THROTTLED)
    busiest = calls.throttled_mailboxes()[:1]
    worst = ""
    if busiest and busiest[0]["mailbox"]:
        mailbox = busiest[0]["mailbox"]
        name = MonitoredUser.objects.upns_by_graph_id([mailbox]).get(mailbox, mailbox)
        worst = f" Most on mailbox {name} ({busiest[0]['count']}): back it off."
    return Verdict(
        value > threshold,
        value,
        threshold,
        f"Graph answered 429 {value} time{pluralize(value)} in the last {_window_text()} "
        f"(threshold {threshold}).{worst}",
    )


def _token_refused() -> Verdict:
    refused = TokenHealth.objects.active_refusal()
    if refused is None:
        return Verdict(False, 0, 0, "The identity platform issues tokens for the active secret.")
    return Verdict(
        True,
        refused.failure_code or 1,
        0,
        f"Microsoft sign-in refused the active credential: {refused.reason}. "
        f"{refused.failure_message}",
    )


def _subscription_expiry() -> Verdict:
    hours = get(SUB_HOURS)
    expiring = Subscription.objects.expiring_within(timedelta(hours=hours)).count()
    soonest = Subscription.objects.soonest_expiry_in()
    soon = f"; the soonest in {soonest.total_seconds() / 3600:.1f} h" if soonest is not None else ""
    return Verdict(
        expiring > 0,
        expiring,
        hours,
        f"{expiring} subscription{pluralize(expiring)} expire{pluralize(expiring, 's,')} within "
        f"{hours} h{soon}.",
    )


def _secret_expiry() -> Verdict:
    days = get(SECRET_DAYS)
    expires_in = Credential.objects.active_expires_in()
    if expires_in is None:
        return Verdict(
            False, None, days, "The active credential (secret or certificate) has no known expiry."
        )
    left = expires_in.total_seconds() / 86400
    return Verdict(
        left < days,
        round(left, 2),
        days,
        f"The active credential expires in {left:.1f} days (threshold {days}).",
    )


def _worker() -> Verdict:
    minutes = get(WORKER_MINUTES)
    age = worker_heartbeat_age()
    if age is None:
        return Verdict(True, None, minutes, "No worker has ever reported a heartbeat.")
    return Verdict(
        age > minutes * 60,
        round(age),
        minutes * 60,
        f"The last worker heartbeat was {int(age)} s ago.",
    )


def _audit_chain() -> Verdict:
    ok = AuditChainCheck.objects.latest_ok()
    return Verdict(
        ok is False,
        None if ok is None else float(not ok),
        0,
        "The audit log's hash chain is broken: run verify_audit_chain."
        if ok is False
        else "The audit chain verified.",
    )


def _superusers() -> Verdict:
    # No portal path sets the flag (createsuperuser is refused), and it grants nothing here:
    # one set anyway was set beside the portal, in the database or a shell.
    names = list(
        get_user_model()
        .objects.filter(is_superuser=True)
        .order_by("username")
        .values_list("username", flat=True)
    )
    shown = ", ".join(names[:5]) + (" …" if len(names) > 5 else "")
    return Verdict(
        bool(names),
        len(names),
        0,
        f"{len(names)} account{pluralize(names)} carr{pluralize(names, 'ies,y')} Django's "
        f"superuser flag: {shown}."
        if names
        else "No account carries the superuser flag.",
    )


BREAK_GLASS_WINDOW = timedelta(hours=24)


def _break_glass() -> Verdict:
    # Password sign-ins by break-glass accounts are audited as auth.break_glass.
    count = AuditEvent.objects.filter(
        action="auth.break_glass", created_at__gte=timezone.now() - BREAK_GLASS_WINDOW
    ).count()
    return Verdict(
        count > 0,
        count,
        0,
        f"{count} break-glass password sign-ins in the last 24 h (see the audit "
        "log, action auth.break_glass).",
    )


def _messages_failed() -> Verdict:
    value = OutboundMessage.objects.failed_within(alert_window())
    threshold = get(MESSAGES_FAILED)
    return Verdict(
        value > threshold,
        value,
        threshold,
        f"{value} outbound messages failed in the last {_window_text()} (threshold {threshold}).",
    )


def _oldest_queued() -> Verdict:
    minutes = get(QUEUED_MINUTES)
    age = OutboundMessage.objects.oldest_unsent_seconds()
    if age is None:
        return Verdict(False, None, minutes, "No message is waiting to be sent.")
    return Verdict(
        age > minutes * 60,
        round(age),
        minutes * 60,
        f"The oldest unsent message has waited {age / 60:.0f} min (threshold {minutes} min).",
    )


def _inbox_stale() -> Verdict:
    minutes = get(INBOX_MINUTES)
    age = NotificationInbox.objects.oldest_pending_seconds()
    if age is None:
        return Verdict(False, None, minutes * 60, "No notification waits for processing.")
    waiting = NotificationInbox.objects.pending().count()
    return Verdict(
        age > minutes * 60,
        round(age),
        minutes * 60,
        f"{waiting} notification{pluralize(waiting)} wait{pluralize(waiting, 's,')}; the oldest "
        f"for {age / 60:.0f} min (threshold {minutes} min).",
    )


def _approval_bypassed() -> Verdict:
    count = ApprovalRequest.objects.unreviewed_break_glass().count()
    return Verdict(
        count > 0,
        count,
        0,
        f"{count} covered action{pluralize(count)} ran without approval (break glass) and "
        f"wait{pluralize(count, 's,')} for another admin's review.",
    )


def _endpoints_failing() -> Verdict:
    value = EventEndpoint.objects.failing().count()
    return Verdict(
        value > 0,
        value,
        0,
        f"{value} event endpoint{pluralize(value)} {_are(value)} failing or disabled.",
    )


def _event_backlog() -> Verdict:
    value, threshold = EventEndpoint.objects.backlog(), get(EVENT_BACKLOG)
    return Verdict(
        value > threshold,
        value,
        threshold,
        f"{value} event{pluralize(value)} wait{pluralize(value, 's,')} for delivery (threshold "
        f"{threshold}).",
    )


def _subscription_missing() -> Verdict:
    minutes = get(SUB_MISSING_MINUTES)
    overdue = Subscription.objects.missing_longer_than(timedelta(minutes=minutes)).count()
    missing, longest = Subscription.objects.missing_figures()
    if not missing or longest is None:
        return Verdict(False, 0, minutes, "Graph has every subscription the portal keeps.")
    return Verdict(
        overdue > 0,
        overdue,
        minutes,
        f"{missing} subscription{pluralize(missing)} {_are(missing)} missing in Graph, the "
        f"longest for {longest / 60:.0f} min (threshold {minutes} min): no notifications "
        "arrive for them.",
    )


def _slow_answers() -> Verdict:
    threshold = get(SLOW_ANSWERS)
    answers = NotificationAnswers.objects.figures()
    share = answers.slow_percent or 0.0
    return Verdict(
        answers.answered >= MIN_ANSWERS_FOR_SLOW_SHARE and share > threshold,
        share,
        threshold,
        f"{answers.slow} of {answers.answered} notification requests in the last 10 min were "
        f"answered slowly ({share:.1f} %, threshold {threshold} %).",
    )


def _audit_stream_lag() -> Verdict:
    minutes = get(AUDIT_STREAM_MINUTES)
    lags = AuditStreamCursor.objects.lags(settings.AUDIT_STREAM_SINKS)
    worst = max(lags, key=lambda lag: lag.lag_seconds, default=None)
    if worst is None:
        return Verdict(False, None, minutes * 60, "No audit stream sink is configured.")
    error = f" Last error: {worst.last_error}" if worst.last_error else ""
    return Verdict(
        worst.lag_seconds > minutes * 60,
        round(worst.lag_seconds),
        minutes * 60,
        f"The audit stream to {worst.sink} is {worst.lag_seconds / 60:.0f} min behind "
        f"({worst.pending} record{pluralize(worst.pending)} wait{pluralize(worst.pending, 's,')}; "
        f"threshold {minutes} min). They are kept at least "
        f"{settings.AUDIT_STREAM_BUFFER_DAYS} days: nothing is lost while the sink is down.{error}",
    )


def _probe_notifications() -> Verdict:
    timeout = settings.PROBE_NOTIFICATION_TIMEOUT_MINUTES
    by_channel = Probe.objects.figures_by_channel()
    missing = {
        channel: figures
        for channel, figures in by_channel.items()
        if figures.status == Probe.Status.NO_NOTIFICATION
    }
    if not missing:
        return Verdict(
            False,
            None,
            timeout * 60,
            "The latest probe's notification arrived." if by_channel else "No probe has finished.",
        )
    channel, figures = next(iter(missing.items()))
    return Verdict(
        True,
        figures.delta_seconds,
        timeout * 60,
        f"The latest probe ({Probe.Channel(channel).label}) was seen by delta after "
        f"{figures.delta_seconds or 0:.0f} s but its notification did not arrive within "
        f"{timeout:g} min.",
    )


def _probe_sending() -> Verdict:
    tried = Probe.objects.exclude(status=Probe.Status.SENDING)
    latest = next(
        (
            probe
            for probe in (tried.filter(channel=c).first() for c in Probe.Channel.values)
            if probe is not None and probe.status == Probe.Status.FAILED
        ),
        None,
    )
    failing = latest is not None
    return Verdict(
        failing,
        float(failing),
        0,
        f"The latest probe mail could not be sent: {latest.error}"
        if failing and latest is not None
        else "The latest probe mail was sent.",
    )


RULES: tuple[Rule, ...] = (
    Rule(
        "subscription_expiring",
        "Webhook subscription expiring",
        _subscription_expiry,
        "Subscriptions page → Set up all (or `manage.py setup_webhooks`).",
        _fix_at("console:subscriptions"),
    ),
    Rule(
        "queue_length",
        "Queue too long",
        _queue,
        "Jobs page: look for a paused type or a failing worker; Graph pages for throttling.",
        _fix_at("console:jobs", "?status=pending"),
    ),
    Rule(
        "dead_letters",
        "Too many dead jobs",
        _dead,
        "Jobs page → Dead: group by error, fix the cause, then retry the group.",
        _fix_at("console:jobs", "?status=dead"),
    ),
    Rule(
        "token_refused",
        "Microsoft sign-in refused",
        _token_refused,
        "Credentials page: add a new secret from the app registration, verify it, activate "
        "it; the alert clears with the next token the identity platform issues.",
        _fix_at("console:credentials", "#wizard-title"),
    ),
    Rule(
        "graph_error_rate",
        "Graph unreachable or failing",
        _graph_failing,
        "Graph calls page, filtered to 5xx and no answer: which routes fail. Jobs retry with "
        "backoff by themselves; check Microsoft 365 Service health and the network path.",
        _fix_at("console:graph_calls", "?window=1h&status=5xx"),
    ),
    Rule(
        "graph_throttled",
        "Graph throttling us",
        _throttled,
        "Rate limits: back off the mailbox that draws the 429s for some minutes (every job "
        "for it waits); the others go on.",
        _fix_at("console:graph_calls", "#backoff"),
    ),
    Rule(
        "secret_expiring",
        "Client secret or certificate expiring",
        _secret_expiry,
        "Credentials page → add the new secret or certificate, verify, activate.",
        _fix_at("console:credentials", "#wizard-title"),
    ),
    Rule(
        "worker_down",
        "No worker running",
        _worker,
        "Start the sync-worker (Kubernetes: sync-worker Deployment; `make run` starts it "
        "again by itself). The Jobs page shows when jobs run again.",
        _fix_at("console:jobs", "?status=pending"),
    ),
    Rule(
        "audit_chain_broken",
        "Audit chain broken",
        _audit_chain,
        "Run `manage.py verify_audit_chain`; treat as a security incident.",
        _fix_at("console:audit"),
        security=True,
    ),
    Rule(
        "break_glass_sign_in",
        "Break-glass account used",
        _break_glass,
        "Confirm with the person who used it why Entra sign-in was not possible; rotate its "
        "password afterwards. Audit log → auth.break_glass.",
        _fix_at("console:audit", "?action=auth.break_glass"),
        security=True,
    ),
    Rule(
        "superuser_account",
        "Superuser account exists",
        _superusers,
        "Nothing in the portal sets the flag: find out who did (database or shell access). "
        "Clear it with `manage.py portal_user set-role NAME ROLE` (audited), or deactivate "
        "the account; until then it cannot sign in.",
        _fix_at("console:people"),
        security=True,
    ),
    Rule(
        "approval_break_glass",
        "Approval bypassed (break glass)",
        _approval_bypassed,
        "Approvals page: read the reason, check what the run did, then mark it reviewed. "
        "Audit log → approval.break_glass.",
        _fix_at("console:audit", "?action=approval.break_glass"),
        security=True,
    ),
    Rule(
        "messages_failed",
        "Outbound messages failing",
        _messages_failed,
        "Messages: group the failures by error, fix the cause (sender, Teams sender "
        "account, throttling), then retry or resend.",
        _fix_at("console:messages", "?status=failed"),
    ),
    Rule(
        "message_queue_stale",
        "Messages not going out",
        _oldest_queued,
        "Jobs page: is graph.send_mail/graph.send_teams paused or its worker down? Check the "
        "sending budgets on the rate-limits page.",
        _fix_at("console:messages", "?status=queued"),
    ),
    Rule(
        "inbox_stale",
        "Notifications not processed",
        _inbox_stale,
        "Is the inbox drain running (sync-worker pods: the drain container; `make run`: "
        "the drain process)? Jobs page: is notification processing paused? The "
        "graph.inbox.sweep schedule drains every minute meanwhile if the worker runs.",
        _fix_at("console:jobs", "#job-types"),
    ),
    Rule(
        "event_endpoints_failing",
        "Event endpoints failing",
        _endpoints_failing,
        "Event endpoints: see the failing endpoint's latest deliveries (status, answer); once "
        "the receiver is fixed, Resume (a disabled one) and its backlog is sent.",
        _fix_at("console:event_endpoints"),
    ),
    Rule(
        "event_backlog",
        "Event backlog growing",
        _event_backlog,
        "Event endpoints: which endpoint holds the backlog (paused, failing?); Jobs: is "
        "events.deliver running?",
        _fix_at("console:event_endpoints"),
    ),
    Rule(
        "subscription_missing",
        "Subscriptions missing in Graph",
        _subscription_missing,
        "Subscriptions → Set up all recreates them (and catches up by delta); if it fails, "
        "its message says why (receiver unreachable, permission).",
        _fix_at("console:subscriptions_setup"),
    ),
    Rule(
        "notification_answers_slow",
        "Notification answers slow",
        _slow_answers,
        "The receiver answers Graph too slowly: is the database slow or the web tier "
        "saturated (add web workers)? Verify shows the receiver's round trip. Graph delays "
        "notifications past 10 % slow answers and drops them past 15 %.",
        _fix_at("console:verify"),
    ),
    Rule(
        "audit_stream_lagging",
        "Audit stream behind",
        _audit_stream_lag,
        "Is the sink (SIEM, syslog relay, file system) up and does it accept the portal? The "
        "alert says the last error. Nothing is lost: the stream resumes from its cursor.",
        _fix_at("console:dashboard", "#health"),
        # While it lags, edits to the log are not yet outside the database: admins only snooze.
        security=True,
    ),
    Rule(
        "probe_notifications_missing",
        "Notifications not arriving",
        _probe_notifications,
        "The probe mail reached the mailbox but Graph's notification did not reach us: Verify "
        "(is the receiver reachable from Graph?), Subscriptions → Compare / Set up all; then "
        "run the probe again on the Probe page.",
        _fix_at("console:probe", "#run-probe"),
    ),
    Rule(
        "probe_sending_failing",
        "Sending failing",
        _probe_sending,
        "Graph refused the probe mail: Verify (token, Mail.Send permission, the probe "
        "sender's mailbox); then run the probe again on the Probe page.",
        _fix_at("console:probe", "#run-probe"),
    ),
)
