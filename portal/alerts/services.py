"""Evaluate the rules, record state changes, tell people; acknowledge and snooze."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from integrations.microsoft.messaging.outbox import send_teams_message
from integrations.microsoft.models import GraphCall
from integrations.microsoft.teams_sender import current_delegated_account
from portal.access.actors import Actor
from portal.access.authz import require
from portal.alerts.models import Alert, AlertEvent, AuditChainCheck, MetricSample
from portal.alerts.rules import RULES, Rule, rule_named
from portal.audit.services import record
from portal.audit.verification import verify_chain
from portal.jobs.models import Job

logger = logging.getLogger(__name__)
MAX_SNOOZE = timedelta(days=7)
SECURITY_RULES = frozenset(rule.name for rule in RULES if rule.security)


class AlertError(Exception):
    """An alert action that cannot be carried out (the message says why)."""


def evaluate_all() -> list[AlertEvent]:
    """Evaluate every rule once; returns the state changes (firing or resolved)."""
    changes = []
    for rule in RULES:
        try:
            verdict = rule.evaluate()
        except Exception:
            logger.exception("Alert rule %s could not be evaluated", rule.name)
            continue
        event = _apply(rule, verdict.firing, verdict.value, verdict.threshold, verdict.message)
        if event is not None:
            changes.append(event)
    return changes


def evaluate_rule(name: str) -> AlertEvent | None:
    """Evaluate one rule now (an event that must not wait for the next periodic run)."""
    rule = rule_named(name)
    if rule is None:
        raise AlertError(f"There is no alert rule {name!r}.")
    verdict = rule.evaluate()
    return _apply(rule, verdict.firing, verdict.value, verdict.threshold, verdict.message)


def _apply(
    rule: Rule, firing: bool, value: float | None, threshold: float, message: str
) -> AlertEvent | None:
    now = timezone.now()
    new_state = Alert.State.FIRING if firing else Alert.State.OK
    with transaction.atomic():
        alert, _ = Alert.objects.select_for_update().get_or_create(rule=rule.name)
        changed = alert.state != new_state
        alert.value, alert.threshold, alert.message = value, threshold, message
        alert.last_evaluated_at = now
        if changed:
            alert.state = new_state
            if firing:
                alert.firing_since, alert.resolved_at = now, None
            else:
                # A snooze covers one firing: the next one is news again.
                alert.resolved_at, alert.snoozed_until = now, None
                alert.acknowledged_by, alert.acknowledged_at = "", None
        alert.save()
        if not changed:
            return None
        event = AlertEvent.objects.create(
            rule=rule.name, state=new_state, value=value, message=message
        )
    snoozed = alert.snoozed_until is not None and alert.snoozed_until > now
    if not snoozed:
        event.notified = notify(rule, new_state, message)
        AlertEvent.objects.filter(pk=event.pk).update(notified=event.notified)
    logger.warning("Alert %s %s: %s", rule.name, new_state, message)
    return event


def notify(rule: Rule, state: str, message: str) -> str:
    """Tell people: a Teams chat (ALERT_TEAMS_CHAT_ID) through the integration itself while
    it is healthy, else e-mail (ALERT_EMAIL_TO). Returns who was told, for the record."""
    verb = "FIRING" if state == Alert.State.FIRING else "resolved"
    subject = f"[Fleet Graph Portal] {verb}: {rule.title}"
    fix = f"\nWhere: {settings.PUBLIC_BASE_URL}{rule.link}" if rule.link else ""
    body = f"{message}\n\nWhat to do: {rule.runbook}{fix}\n"
    told = []
    teams_sent = _notify_teams(rule, subject, body)
    if teams_sent:
        told.append(teams_sent)
    if not teams_sent or rule.name in TEAMS_CANNOT_REPORT:
        told.append(_notify_email(rule, subject, body))
    return "; ".join(t for t in told if t)


# When these fire, the Teams path itself may be what is broken: always e-mail too.
TEAMS_CANNOT_REPORT = {
    "graph_error_rate",
    "graph_throttled",
    "worker_down",
    "secret_expiring",
    "token_refused",
}


def _notify_teams(rule: Rule, subject: str, body: str) -> str:
    chat_id = settings.ALERT_TEAMS_CHAT_ID
    if not chat_id:
        return ""
    try:
        if current_delegated_account() is None:
            return ""  # no sender connected: e-mail instead
        send_teams_message(f"{subject}\n\n{body}", chat_id=chat_id, created_by=f"alert:{rule.name}")
    except Exception:
        logger.exception("Could not queue the Teams alert for %s", rule.name)
        return ""
    return f"Teams chat {chat_id}"


def _notify_email(rule: Rule, subject: str, body: str) -> str:
    recipients = list(settings.ALERT_EMAIL_TO)
    if not recipients:
        return ""
    try:
        send_mail(subject, body, None, recipients, fail_silently=False)
    except Exception:
        logger.exception("Could not e-mail alert %s", rule.name)
        return "e-mail failed"
    return "e-mail: " + ", ".join(recipients)


def _get(rule: str) -> Alert:
    alert = Alert.objects.filter(rule=rule).first()
    if alert is None:
        raise AlertError(f"There is no alert {rule!r}.")
    return alert


def acknowledge(actor: Actor, rule: str) -> Alert:
    require(
        actor, "acknowledge_alerts", action="alert.acknowledge", target_type="alert", target_id=rule
    )
    with transaction.atomic():
        alert = _get(rule)
        if alert.state != Alert.State.FIRING:
            raise AlertError(f"{rule} is not firing.")
        alert.acknowledged_by, alert.acknowledged_at = actor.name, timezone.now()
        alert.save(update_fields=["acknowledged_by", "acknowledged_at"])
        record(
            "alert.acknowledge",
            actor=actor,
            target_type="alert",
            target_id=rule,
            params={"value": alert.value},
        )
    return alert


def snooze(actor: Actor, rule: str, minutes: int, reason: str = "") -> Alert:
    """Silence a firing alert's notifications for `minutes` (up to MAX_SNOOZE), until it
    resolves. A security alert (Rule.security) only by someone holding
    snooze_security_alerts (admins). Nothing that is not firing can be snoozed ahead."""
    require(actor, "acknowledge_alerts", action="alert.snooze", target_type="alert", target_id=rule)
    if not 1 <= minutes <= MAX_SNOOZE.total_seconds() // 60:
        raise AlertError("Snooze for between 1 minute and 7 days.")
    if rule in SECURITY_RULES:
        require(
            actor,
            "snooze_security_alerts",
            action="alert.snooze",
            target_type="alert",
            target_id=rule,
        )
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(rule=rule).first()
        if alert is None:
            raise AlertError(f"There is no alert {rule!r}.")
        if alert.state != Alert.State.FIRING:
            raise AlertError(f"{rule} is not firing: only a firing alert can be snoozed.")
        alert.snoozed_until = timezone.now() + timedelta(minutes=minutes)
        alert.save(update_fields=["snoozed_until"])
        record(
            "alert.snooze",
            actor=actor,
            target_type="alert",
            target_id=rule,
            params={"minutes": minutes},
            reason=reason,
        )
    return alert


@dataclass(frozen=True)
class FiringAlert:
    """A firing alert with its rule (title, the link to the fix), for the dashboard banner."""

    alert: Alert
    rule: Rule


def active_alerts() -> list[FiringAlert]:
    """The alerts firing now, oldest first (rows of rules that no longer exist are left out)."""
    firing = Alert.objects.filter(state=Alert.State.FIRING).order_by("firing_since")
    return [
        FiringAlert(alert, rule) for alert in firing if (rule := rule_named(alert.rule)) is not None
    ]


# Rules are evaluated every minute by a worker. When no worker runs (the very thing
# worker_down is about), the page someone is looking at evaluates them instead.
EVALUATION_OVERDUE = timedelta(minutes=2)


def evaluate_if_overdue() -> None:
    last = Alert.objects.aggregate(last=Max("last_evaluated_at"))["last"]
    if last is None or timezone.now() - last > EVALUATION_OVERDUE:
        evaluate_all()


def check_audit_chain() -> AuditChainCheck | None:
    """The scheduled verification (the receiver below stores its result)."""
    verify_chain(source="schedule")
    return AuditChainCheck.objects.order_by("-id").first()


def record_chain_verification(sender: Any, result: Any, **kwargs: Any) -> None:
    """Every audit verification, wherever it ran, feeds the audit_chain_broken rule now."""
    problem = result.problem
    AuditChainCheck.objects.create(
        ok=result.ok,
        events=result.events,
        first_bad_event=problem.event_id if problem else None,
        problem=problem.problem if problem else "",
    )
    rule = next(rule for rule in RULES if rule.name == "audit_chain_broken")
    verdict = rule.evaluate()
    _apply(rule, verdict.firing, verdict.value, verdict.threshold, verdict.message)


def take_sample() -> None:
    """Record the queue and the last minute's Graph calls for the dashboard charts."""
    now = timezone.now()
    last = MetricSample.objects.order_by("-taken_at").values_list("taken_at", flat=True).first()
    since = max(last, now - timedelta(minutes=5)) if last else now - timedelta(minutes=1)
    calls = GraphCall.objects.filter(created_at__gt=since, created_at__lte=now).figures()
    MetricSample.objects.create(
        taken_at=now,
        queue_length=Job.objects.queue_length(),
        dead=Job.objects.dead_letters(),
        calls_ok=calls.succeeded,
        calls_failed=calls.failed,
        calls_throttled=calls.throttled,
    )
