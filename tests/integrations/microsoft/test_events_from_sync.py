"""The sync engine appends feed events in the transaction of the change it applies."""

from __future__ import annotations

import pytest

from integrations.microsoft import sync
from integrations.microsoft.models import SyncedItem, SyncState
from portal.access.actors import Actor
from portal.events.models import Event

pytestmark = pytest.mark.django_db


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


def deletions() -> list[str]:
    return list(
        Event.objects.filter(type="mail.deleted")
        .order_by("id")
        .values_list("data__graphId", flat=True)
    )


def test_a_full_resyncs_sweep_emits_one_deletion_per_item_it_removes(
    graph_settings, monitored, emulator, emulator_user
):
    upn = emulator_user["userPrincipalName"]
    state = sync.ensure_state(monitored.pk, "messages")
    sync.run(state.pk)
    live = sorted(
        SyncedItem.objects.filter(monitored_user=monitored, removed_at__isnull=True).values_list(
            "graph_id", flat=True
        )
    )
    # Deleted while the delta token is dead: no `@removed` reaches us, only the sweep of the
    # automatic full round sees that they are gone.
    emulator.control.expire_delta_tokens(monitored.graph_id)
    for victim in live[:2]:
        emulator.control.delete_mail(upn, victim, hard=True)
    run = sync.run(state.pk)
    assert run.kind == "auto_reset" and run.removed == 2
    assert sorted(deletions()) == live[:2]
    event = Event.objects.filter(type="mail.deleted").first()
    assert event.data["user"]["id"] == monitored.graph_id and event.subject == monitored.graph_id
    # Nothing counts twice: a later `@removed` for a swept item, a replayed page, quiet runs,
    # and an operator's full resync (which sweeps again).
    state.refresh_from_db()
    assert sync.apply_page(state, [{"id": live[0], "@removed": {"reason": "deleted"}}]) == (0, 0, 0)
    sync.run(state.pk)
    sync.full_sync(Actor.system("tests"), monitored.pk, "messages")
    sync.run(state.pk)
    assert sorted(deletions()) == live[:2]


def test_a_delta_removal_then_a_manual_reset_emits_the_deletion_once(
    graph_settings, monitored, emulator, emulator_user
):
    upn = emulator_user["userPrincipalName"]
    state = sync.ensure_state(monitored.pk, "messages")
    sync.run(state.pk)
    removed_by_delta = emulator.control.create_mail(upn, subject="Gone soon")
    sync.run(state.pk)
    emulator.control.delete_mail(upn, removed_by_delta["id"])
    sync.run(state.pk)  # the delta's `@removed`
    swept = SyncedItem.objects.filter(monitored_user=monitored, removed_at__isnull=True).first()
    emulator.control.expire_delta_tokens(monitored.graph_id)
    emulator.control.delete_mail(upn, swept.graph_id, hard=True)
    sync.reset(Actor.system("tests"), monitored.pk, "messages")
    run = sync.run(state.pk)
    assert run.kind == "manual_reset" and run.removed == 1
    assert deletions() == [removed_by_delta["id"], swept.graph_id]
