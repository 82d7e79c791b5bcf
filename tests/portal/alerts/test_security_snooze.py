"""Snoozing: security alerts only by admins, and no alert before (or after) it fires.

Found: support could snooze "audit chain broken" and "break-glass sign-in" for a week before
they fired, so the next break-in told nobody.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.core.exceptions import PermissionDenied
from django.urls import reverse
from django.utils import timezone

from portal.access.actors import Actor, role_of
from portal.alerts import services
from portal.alerts.models import Alert, AuditChainCheck
from portal.alerts.rules import RULES
from portal.audit.models import AuditEvent
from portal.audit.services import record

pytestmark = pytest.mark.django_db

SECURITY = ("audit_chain_broken", "break_glass_sign_in")


def _actor(user) -> Actor:
    return Actor(kind="user", name=user.username, role=role_of(user), user=user)


def fire(rule: str) -> Alert:
    if rule == "audit_chain_broken":
        AuditChainCheck.objects.create(ok=False, events=1, problem="row 1 edited")
    else:
        record("auth.break_glass", actor=Actor.system("tests"), target_type="user", target_id=1)
    services.evaluate_rule(rule)
    alert = Alert.objects.get(rule=rule)
    assert alert.state == Alert.State.FIRING
    return alert


def snoozed(rule: str) -> bool:
    return Alert.objects.filter(rule=rule, snoozed_until__isnull=False).exists()


def test_the_security_rules_are_marked():
    assert {rule.name for rule in RULES if rule.security} >= set(SECURITY)
    assert not next(rule for rule in RULES if rule.name == "worker_down").security


@pytest.mark.parametrize("rule", SECURITY)
def test_support_and_operators_cannot_snooze_a_security_alert(rule, sam_support, otto_operator):
    fire(rule)
    for person in (sam_support, otto_operator):
        with pytest.raises(PermissionDenied):
            services.snooze(_actor(person), rule, 60 * 24 * 7)
        assert not snoozed(rule)
        assert AuditEvent.objects.filter(
            action="alert.snooze", outcome="denied", actor_name=person.username, target_id=rule
        ).exists()
    # Acknowledging (someone is on it) stays open to support.
    services.acknowledge(_actor(sam_support), rule)


@pytest.mark.parametrize("rule", SECURITY)
def test_an_admin_snoozes_a_firing_security_alert(rule, ada_admin):
    fire(rule)
    services.snooze(_actor(ada_admin), rule, 30, "investigating")
    assert snoozed(rule)


@pytest.mark.parametrize("rule", [*SECURITY, "worker_down"])
def test_nobody_snoozes_an_alert_that_is_not_firing(rule, ada_admin, sam_support):
    with pytest.raises(services.AlertError, match="no alert"):  # never evaluated
        services.snooze(_actor(ada_admin), rule, 60)
    Alert.objects.create(rule=rule, state=Alert.State.OK)
    # (Support may not snooze a security alert at all: that denial comes first.)
    for person in (ada_admin,) if rule in SECURITY else (ada_admin, sam_support):
        with pytest.raises(services.AlertError, match="not firing"):
            services.snooze(_actor(person), rule, 60)
    assert not snoozed(rule)


def test_a_snooze_ends_when_the_alert_resolves(settings, sam_support):
    settings.ALERT_EMAIL_TO = ["oncall@example.com"]
    services.evaluate_all()  # worker_down fires: no heartbeat yet
    services.snooze(_actor(sam_support), "worker_down", 60 * 24)
    Alert.objects.filter(rule="worker_down").update(
        state=Alert.State.FIRING, firing_since=timezone.now() - timedelta(hours=1)
    )
    services._apply(next(r for r in RULES if r.name == "worker_down"), False, 0, 0, "back")
    assert not snoozed("worker_down")
    mail.outbox.clear()
    services.evaluate_all()  # fires again: people are told
    assert [m for m in mail.outbox if "No worker" in m.subject]


# --- the console and the admin ---------------------------------------------------------------


def test_the_console_offers_support_no_snooze_of_a_security_alert_and_refuses_one(
    client, sam_support, ada_admin
):
    fire("audit_chain_broken")
    services.evaluate_all()  # worker_down fires too
    client.force_login(sam_support)
    page = client.get(reverse("console:alerts")).content.decode()
    assert 'aria-label="Snooze No worker running for"' in page
    assert 'aria-label="Snooze Audit chain broken for"' not in page
    response = client.post(
        reverse("console:alert_action", args=["audit_chain_broken"]),
        {"action": "snooze", "minutes": "10080"},
        follow=True,
    )
    assert b"may not snooze a security alert" in response.content
    assert not snoozed("audit_chain_broken")
    client.force_login(ada_admin)
    page = client.get(reverse("console:alerts")).content.decode()
    assert 'aria-label="Snooze Audit chain broken for"' in page


def test_the_console_refuses_a_snooze_of_an_alert_that_is_not_firing(client, sam_support):
    Alert.objects.create(rule="worker_down", state=Alert.State.OK)
    client.force_login(sam_support)
    response = client.post(
        reverse("console:alert_action", args=["worker_down"]),
        {"action": "snooze", "minutes": "60"},
        follow=True,
    )
    assert b"not firing" in response.content
    assert not snoozed("worker_down")


def test_the_django_admin_cannot_snooze(client, ada_admin):
    fire("audit_chain_broken")
    client.force_login(ada_admin)
    url = reverse("admin:alerts_alert_change", args=["audit_chain_broken"])
    response = client.post(
        url, {"state": "firing", "snoozed_until_0": "2030-01-01", "snoozed_until_1": "00:00:00"}
    )
    assert response.status_code == 403
    assert not snoozed("audit_chain_broken")
