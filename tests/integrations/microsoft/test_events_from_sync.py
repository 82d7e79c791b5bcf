"""The sync engine appends feed events in the transaction of the change it applies."""

from __future__ import annotations

import pytest

from integrations.microsoft import sync
from integrations.microsoft.models import SyncState
from portal.events.models import Event
from tests.integrations.microsoft import webhook_support

pytestmark = pytest.mark.django_db
emulator_user = webhook_support.emulator_user
monitored = webhook_support.monitored


def test_the_first_round_is_the_baseline_and_later_changes_become_events(
    graph_settings, monitored, emulator, emulator_user
):
    state = sync.ensure_state(monitored.pk, "messages")
    first = sync.run(state.pk)
    assert first.added > 0 and not Event.objects.exists()  # history, not news
    upn = emulator_user["userPrincipalName"]
    new = emulator.control.create_mail(upn, subject="Delivery note 88")
    sync.run(state.pk)
    received = Event.objects.get(type="mail.received")
    assert received.data["graphId"] == new["id"]
    assert received.data["subject"] == "Delivery note 88"
    assert received.data["user"]["id"] == monitored.graph_id
    assert received.data["from"] and received.data["receivedAt"]
    assert received.subject == monitored.graph_id
    emulator.control.update_mail(upn, new["id"], isRead=True)
    sync.run(state.pk)
    emulator.control.delete_mail(upn, new["id"])
    sync.run(state.pk)
    assert list(Event.objects.order_by("id").values_list("type", "data__graphId")) == [
        ("mail.received", new["id"]),
        ("mail.updated", new["id"]),
        ("mail.deleted", new["id"]),
    ]
    quiet = sync.run(state.pk)
    assert quiet.added == quiet.updated == quiet.removed == 0 and Event.objects.count() == 3


def test_chat_messages_become_events(graph_settings, monitored, emulator):
    state = sync.ensure_state(monitored.pk, "chatMessages")
    sync.run(state.pk)
    chat = next(c for c in emulator.control.tenant()["chats"] if monitored.graph_id in c["members"])
    other = next(m for m in chat["members"] if m != monitored.graph_id)
    emulator.control.create_chat_message(
        "Arrived at <b>gate 3</b>", chat_id=chat["id"], **{"from": other, "content_type": "html"}
    )
    sync.run(state.pk)
    event = Event.objects.get(type="chat_message.received")
    assert event.data["preview"] == "Arrived at gate 3" and event.data["chatId"] == chat["id"]


def test_a_failed_run_is_a_sync_failed_event(graph_settings, monitored, emulator):
    state = sync.ensure_state(monitored.pk, "messages")
    emulator.control.inject_fault(path="/messages/delta", kind="status", status=400, count=10)
    with pytest.raises(Exception):  # noqa: B017  (the job layer classifies it)
        sync.run(state.pk)
    event = Event.objects.get(type="sync.failed")
    assert event.data["resourceType"] == "messages" and event.data["error"]
    assert SyncState.objects.get(pk=state.pk).status == "failed"
