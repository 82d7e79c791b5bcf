"""The end-to-end probe (integrations/microsoft/probe.py) in one process, against the emulator:
its set-up states, the bad-input refusals, and "sending failing" (the full round trip with
real workers is tests/drills/test_notifications_dropped.py)."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.urls import reverse

from integrations.microsoft import probe, subscriptions
from integrations.microsoft.models import (
    MonitoredUser,
    NotificationInbox,
    OutboundMessage,
    Probe,
    SyncedItem,
)
from portal.access.actors import Actor
from portal.alerts.models import Alert
from portal.alerts.services import evaluate_all
from portal.audit.models import AuditEvent
from portal.events.models import Event
from tests.integrations.microsoft.webhook_support import wait_for

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
    probe.tick([manual.pk])  # what the worker does with the queued job
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


@pytest.mark.django_db(transaction=True)
def test_with_a_teams_sender_and_a_probe_chat_a_chat_message_is_probed_too(
    webhook_settings, emulator, bot, bot_chat, sender_connected, drain
):
    upn = bot["userPrincipalName"].lower()
    MonitoredUser.objects.create(identifier=upn, graph_id=bot["id"], upn=upn)
    webhook_settings.PROBE_MAILBOX = upn
    webhook_settings.MESSAGING_SENDER_MAILBOXES = [upn]
    webhook_settings.PROBE_CHAT_ID = bot_chat
    subscriptions.setup(Actor.system("test"))
    drain()

    probe.tick()  # the schedule: one probe per channel
    teams = Probe.objects.get(channel="teams_chat")
    assert teams.status == "sent" and teams.graph_message_id and teams.mailbox == bot_chat

    def round_trip() -> bool:
        drain()
        probe.tick()
        return Probe.objects.filter(status="measured").count() == 2

    wait_for(round_trip, timeout=30, interval=0.5)
    teams.refresh_from_db()
    assert teams.notified_at and teams.synced_at and teams.deleted_at
    wait_for(
        lambda: (
            drain() is not None
            and NotificationInbox.objects.filter(
                resource_id=teams.graph_message_id, change_type="deleted", status="ignored"
            ).exists()
        ),
        timeout=30,
        interval=0.5,
    )
    drain()
    assert not SyncedItem.objects.filter(graph_id=teams.graph_message_id).exists()
    assert not Event.objects.filter(type__startswith="chat_message.").exists()
    assert not OutboundMessage.objects.exists()
