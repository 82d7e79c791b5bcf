"""Where the portal holds to Graph's documented contract rather than to what the emulator
used to let pass (Microsoft Learn, "chatMessage: delta")."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.utils import timezone

from integrations.microsoft import sync
from integrations.microsoft.models import SyncedItem, SyncState
from portal.events.models import Event

pytestmark = pytest.mark.django_db


def _chat_item(user, graph_id: str, age: timedelta) -> SyncedItem:
    return SyncedItem.objects.create(
        monitored_user=user,
        kind="chatMessages",
        graph_id=graph_id,
        item_at=timezone.now() - age,
        data={"id": graph_id},
        seen_round=0,
    )


def test_a_full_teams_round_does_not_take_old_messages_for_deleted(
    graph_settings, monitored, emulator
):
    """Delta only returns chat messages of the last eight months: after a 410, an operator
    reset or a tenant switch, an older message missing from the round is not a deletion."""
    state = sync.ensure_state(monitored.pk, "chatMessages")
    sync.run(state.pk)
    old = _chat_item(monitored, "old-message", timedelta(days=300))
    recent = _chat_item(monitored, "recently-deleted", timedelta(days=30))
    SyncState.objects.filter(pk=state.pk).update(reset_requested=True)
    run = sync.run(state.pk)
    assert run.kind == "manual_reset" and run.outcome == "succeeded"
    old.refresh_from_db()
    recent.refresh_from_db()
    assert old.removed_at is None
    assert recent.removed_at is not None  # inside the window: really gone
    deleted = [e.data["graphId"] for e in Event.objects.filter(type="chat_message.deleted")]
    assert deleted == ["recently-deleted"]


def test_get_all_messages_delta_pages_with_top_not_prefer(graph_settings, monitored, emulator):
    graph_settings.SYNC_PAGE_SIZE = 100  # more than the route's documented maximum of 50
    state = sync.ensure_state(monitored.pk, "chatMessages")
    mark = len(emulator.control.requests_log())
    sync.run(state.pk)
    calls = [
        c
        for c in emulator.control.requests_log(since=mark)
        if c["path"].endswith("/chats/getAllMessages/delta")
    ]
    first = parse_qs(calls[0]["query"])
    assert first["$top"] == ["50"]
