"""New mail and chat messages in the emulator arrive as notifications and are processed."""

from __future__ import annotations

import pytest

from integrations.microsoft import inbox, subscriptions, sync
from integrations.microsoft.models import NotificationInbox, SyncedItem, SyncState
from portal.access.actors import Actor
from portal.jobs.models import Job
from portal.runtime import registry
from tests.integrations.microsoft.webhook_support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def subscribed(webhook_settings, monitored, emulator, drain):
    summary = subscriptions.setup(Actor.system("test"))
    assert len(summary.created) == 2, summary.lines()
    drain()  # the baseline delta rounds queued by the creation
    registry.clear_cache()
    yield monitored
    registry.clear_cache()  # do not leak a cached ENABLE_REALTIME_SYNC=False


def test_new_mail_arrives_and_is_synced(subscribed, emulator, emulator_user, drain):
    mail = emulator.control.create_mail(
        emulator_user["userPrincipalName"], subject="Truck 42 is late"
    )
    row = wait_for(lambda: NotificationInbox.objects.filter(kind="messages").first())
    assert row.change_type == "created" and row.resource_id == mail["id"]
    drain()
    row.refresh_from_db()
    assert row.status == "processed" and row.sync_job.status == "succeeded"
    item = SyncedItem.objects.get(monitored_user=subscribed, kind="messages", graph_id=mail["id"])
    assert item.summary == "Truck 42 is late" and item.removed_at is None
    assert row.subscription.last_notification_at is not None


def test_new_chat_message_arrives_and_is_synced(subscribed, emulator, emulator_user, drain):
    tenant = emulator.control.tenant()
    chat = next(c for c in tenant["chats"] if emulator_user["id"] in c["members"])
    sender = next(m for m in chat["members"] if m != emulator_user["id"])
    message = emulator.control.create_chat_message(
        body="<p>Loading dock 3</p>", chat_id=chat["id"], **{"from": sender}
    )
    wait_for(lambda: NotificationInbox.objects.filter(kind="chatMessages").exists())
    drain()
    item = SyncedItem.objects.get(kind="chatMessages", graph_id=message["id"])
    assert item.summary == "Loading dock 3"


def test_a_burst_is_coalesced_into_few_delta_runs(subscribed, emulator, emulator_user, drain):
    for n in range(5):
        emulator.control.create_mail(emulator_user["userPrincipalName"], subject=f"burst {n}")
    wait_for(lambda: NotificationInbox.objects.filter(kind="messages").count() == 5)
    before = Job.objects.filter(job_type="graph.sync_delta").count()
    # Drain one notification at a time: every one asks for a delta of the same user.
    while inbox.drain_once(limit=1).claimed:
        pass
    assert Job.objects.filter(job_type="graph.sync_delta").count() == before + 1
    drain()
    assert SyncedItem.objects.filter(summary__startswith="burst").count() == 5


def test_with_realtime_sync_off_the_state_is_only_marked_due(
    subscribed, emulator, emulator_user, drain
):
    registry.set_value(Actor.system("test"), "ENABLE_REALTIME_SYNC", False)
    registry.clear_cache()
    emulator.control.create_mail(emulator_user["userPrincipalName"], subject="later")
    wait_for(lambda: NotificationInbox.objects.exists())
    drain()
    state = SyncState.objects.get(monitored_user=subscribed, kind="messages")
    assert state.due_since is not None
    assert not SyncedItem.objects.filter(summary="later").exists()
    assert NotificationInbox.objects.get().status == "processed"
    # The interval run syncs it and clears the mark.
    assert sync.enqueue_interval_syncs() == 2
    drain()
    state.refresh_from_db()
    assert state.due_since is None and SyncedItem.objects.filter(summary="later").exists()


def test_draining_twice_is_harmless(subscribed, emulator, emulator_user, drain):
    emulator.control.create_mail(emulator_user["userPrincipalName"], subject="once")
    wait_for(lambda: NotificationInbox.objects.first())
    assert inbox.drain_pending().processed == 1
    assert inbox.drain_pending().claimed == 0
