"""Drill: Graph stops delivering change notifications (the emulator's delivery switched off).

Before: nothing noticed; the interval sync kept the data fresh enough that every tile stayed
green. Now the end-to-end probe sees its mail by delta without a notification and raises
"Notifications not arriving"; after the fix a new probe's notification arrives and it clears.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from integrations.microsoft import inbox, probe, subscriptions, sync
from integrations.microsoft.models import NotificationInbox, OutboundMessage, Probe, SyncedItem
from portal.access.actors import Actor
from portal.events.models import Event
from tests.drills.conftest import alert_state, rule, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RULE = "probe_notifications_missing"
TIMEOUT_MINUTES = "0.05"  # 3 s instead of 5 min, for this process and the workers


@pytest.fixture
def probe_settings(webhook_settings, monitored):
    webhook_settings.PROBE_MAILBOX = monitored.upn.lower()
    webhook_settings.MESSAGING_SENDER_MAILBOXES = [monitored.upn.lower()]
    webhook_settings.PROBE_INTERVAL_MINUTES = 1440  # the schedule sends one; the rest by hand
    webhook_settings.PROBE_NOTIFICATION_TIMEOUT_MINUTES = float(TIMEOUT_MINUTES)
    return webhook_settings


def settle(probe_id: int, status: str) -> Probe:
    """Drain notifications and tick until the probe is decided (as the schedules would)."""

    def decided() -> bool:
        inbox.sweep()
        probe.enqueue_tick()
        return Probe.objects.get(pk=probe_id).status == status

    wait_for(decided, timeout=60, interval=1.0)
    return Probe.objects.get(pk=probe_id)


def test_dropped_notifications_are_proven_by_the_probe_and_clear_after_the_fix(
    probe_settings, emulator, monitored, drain, graph_worker, client, otto_operator
):
    subscriptions.setup(Actor.system("drill"))
    drain()
    upn = monitored.upn.lower()
    graph_worker(
        PROBE_MAILBOX=upn,
        MESSAGING_SENDER_MAILBOXES=upn,
        PROBE_INTERVAL_MINUTES="1440",
        PROBE_NOTIFICATION_TIMEOUT_MINUTES=TIMEOUT_MINUTES,
    )

    # Healthy: the scheduled probe goes all the way round and is deleted once measured.
    probe.enqueue_tick()
    first = wait_for(lambda: Probe.objects.filter(status="sent").first(), timeout=60)
    first = settle(first.pk, "measured")
    assert first.notified_at and first.synced_at and first.sent_at
    wait_for(lambda: Probe.objects.get(pk=first.pk).deleted_at, timeout=30)
    assert alert_state(RULE) == "ok"

    # The incident: Graph stops delivering. The interval sync still sees the mail.
    emulator.control.configure(delivery={"enabled": False})
    client.force_login(otto_operator)
    assert client.post(reverse("console:probe_run")).status_code == 302
    second = Probe.objects.exclude(pk=first.pk).get()
    wait_for(lambda: Probe.objects.get(pk=second.pk).sent_at, timeout=60)
    # The interval schedule's entry, as if its next slot had come.
    sync.enqueue_interval_syncs(now=timezone.now() + timedelta(minutes=10))
    wait_for(lambda: Probe.objects.get(pk=second.pk).synced_at, timeout=60)
    second = settle(second.pk, "no_notification")
    assert second.notified_at is None

    assert alert_state(RULE) == "firing"
    dashboard = client.get(reverse("console:dashboard"))
    assert RULE in dashboard.content.decode()
    tiles = {tile["name"]: tile for tile in dashboard.context["health"]}
    assert tiles["Probe"]["state"] == "bad"
    link = str(rule(RULE).link)
    assert link == reverse("console:probe") + "#run-probe"
    page = client.get(link).content.decode()
    assert 'action="/probe/run" class="inline" id="run-probe"' in page

    # The fix: delivery works again; the operator runs the probe from the alert's page.
    emulator.control.configure(delivery={"enabled": True})
    assert client.post(reverse("console:probe_run")).status_code == 302
    third = Probe.objects.exclude(pk__in=[first.pk, second.pk]).get()
    wait_for(lambda: Probe.objects.get(pk=third.pk).sent_at, timeout=60)
    settle(third.pk, "measured")
    assert alert_state(RULE) == "ok"
    metrics = client.get("/metrics").content.decode()
    assert 'fleet_probe_stage_seconds{channel="mail",stage="notification"}' in metrics
    sync_metrics = client.get("/api/metrics/sync").json()
    assert sync_metrics["probe"]["channels"]["mail"]["status"] == "measured"

    # Probe traffic is never a Fleet message, an item or an event; its deletions are ignored.
    wait_for(lambda: Probe.objects.filter(deleted_at__isnull=False).count() == 3, timeout=30)
    wait_for(
        lambda: NotificationInbox.objects.filter(change_type="deleted", status="ignored").exists(),
        timeout=30,
        interval=0.5,
    )
    assert not OutboundMessage.objects.exists()
    assert not SyncedItem.objects.filter(summary__startswith=probe.SUBJECT_PREFIX).exists()
    assert not Event.objects.filter(type__startswith="mail.").exists()
