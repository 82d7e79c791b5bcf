"""The end-to-end probe (integrations/microsoft/probe.py) in one process, against the emulator:
its set-up states, the bad-input refusals, and "sending failing" (the full round trip with
real workers is tests/drills/test_notifications_dropped.py)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse

from integrations.microsoft import probe
from integrations.microsoft.models import OutboundMessage, Probe
from portal.alerts.models import Alert
from portal.alerts.services import evaluate_all
from portal.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def probing(graph_settings, monitored):
    graph_settings.PROBE_MAILBOX = monitored.upn.lower()
    graph_settings.MESSAGING_SENDER_MAILBOXES = [monitored.upn.lower()]
    return monitored


def state(rule: str) -> str:
    evaluate_all()
    return Alert.objects.get(rule=rule).state


def test_without_a_probe_mailbox_it_is_not_set_up_and_says_where_to_set_it_up(
    client, otto_operator
):
    assert probe.setup_problem() == "No probe mailbox is named (PROBE_MAILBOX)."
    assert probe.tick() == "not set up"
    client.force_login(otto_operator)
    tiles = {t["name"]: t for t in client.get(reverse("console:dashboard")).context["health"]}
    assert tiles["Probe"]["state"] == "unset"  # not a failure
    assert tiles["Probe"]["href"] == reverse("console:probe")
    page = client.get(reverse("console:probe")).content.decode()
    assert "not set up" in page and reverse("console:sync_user_add") in page
    assert client.get("/api/metrics/sync").json()["probe"]["notSetUp"].startswith("No probe")
    assert state("probe_notifications_missing") == "ok"
    assert state("probe_sending_failing") == "ok"


def test_a_probe_mailbox_nobody_monitors_is_not_set_up_either(graph_settings, monitored):
    graph_settings.PROBE_MAILBOX = "nobody@fleet.test"
    assert "is not a monitored user" in probe.setup_problem()


def test_running_it_by_hand_needs_the_role_and_a_set_up_probe(client, vera_viewer, sam_support):
    client.force_login(vera_viewer)
    assert client.post(reverse("console:probe_run")).status_code == 403
    client.force_login(sam_support)
    response = client.post(reverse("console:probe_run"), follow=True)
    assert "No probe mailbox is named" in response.content.decode()
    assert not Probe.objects.exists()


def test_a_probe_that_cannot_be_sent_raises_sending_failing_until_one_is(
    probing, emulator, client, sam_support
):
    emulator.control.inject_fault(path=r"/sendMail$", method="POST", status=403)
    assert probe.tick() == "ok"  # the scheduled probe of this slot
    failed = Probe.objects.get()
    assert failed.status == "failed" and "403" in failed.error
    assert state("probe_sending_failing") == "firing"
    emulator.control.clear_faults()
    client.force_login(sam_support)
    client.post(reverse("console:probe_run"))
    manual = Probe.objects.exclude(pk=failed.pk).get()
    assert AuditEvent.objects.filter(action="probe.run", target_id=str(manual.pk)).exists()
    probe.tick(manual.pk)  # what the worker does with the queued job
    assert Probe.objects.get(pk=manual.pk).status == "sent"
    assert state("probe_sending_failing") == "ok"
    assert not OutboundMessage.objects.exists()  # never a Fleet message


@pytest.mark.parametrize(
    "env, message",
    [
        ({"PROBE_INTERVAL_MINUTES": 0.5}, "PROBE_INTERVAL_MINUTES is 0.5"),
        ({"PROBE_MAILBOX": "ceo@fleet.test"}, "PROBE_MAILBOX ceo@fleet.test is not one of"),
        (
            {"PROBE_MAILBOX": "probe@fleet.test", "PROBE_SENDER": "ceo@fleet.test"},
            "PROBE_SENDER ceo@fleet.test is not one of",
        ),
    ],
)
def test_bad_probe_settings_are_refused_at_start_up(settings, env, message):
    settings.MESSAGING_SENDER_MAILBOXES = ["probe@fleet.test"]
    for key, value in env.items():
        setattr(settings, key, value)
    with pytest.raises(SystemCheckError, match=message):
        call_command("check")
