"""Where the portal holds to Graph's documented contract rather than to what the emulator
used to let pass (Microsoft Learn, "chatMessage: delta")."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
from django.conf import settings
from django.utils import timezone

from integrations.graph import auth
from integrations.graph.errors import GraphError
from integrations.microsoft import subscriptions, sync
from integrations.microsoft.models import MailboxLease, Subscription, SyncedItem, SyncState
from portal.access.actors import Actor
from portal.events.models import Event
from tests.conftest import subprocess_env

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


@pytest.mark.django_db(transaction=True)
def test_a_refused_subscription_lifetime_is_asked_again_with_the_allowed_one(
    webhook_settings, monitored, emulator, drain
):
    """Graph may allow less than the documented maximum (tenant or resource specifics): the
    refusal names the maximum, and the portal asks for that instead of staying failed."""
    emulator.control.configure(subscriptions={"teams_max_minutes": 1_000, "mail_max_minutes": 900})
    subscriptions.setup(Actor.system("test"))
    drain()
    active = {s.kind: s for s in Subscription.objects.filter(state="active")}
    assert set(active) == {"messages", "chatMessages"}
    teams_left = active["chatMessages"].expiration - timezone.now()
    assert timedelta(minutes=990) < teams_left <= timedelta(minutes=1_000)
    # Renewal meets the same limit and adapts the same way.
    emulator.control.configure(subscriptions={"teams_max_minutes": 500})
    renewed = subscriptions._renew(active["chatMessages"])
    assert renewed.expiration - timezone.now() <= timedelta(minutes=500)
    assert not Subscription.objects.filter(state="failed").exists()


def test_a_teams_refusal_without_a_figure_falls_back_to_an_hour():
    refused = GraphError("Subscription expiration is out of range.", status=400, code="x")
    assert subscriptions.allowed_lifetime(refused, "chatMessages", 4_200) == 60
    assert subscriptions.allowed_lifetime(refused, "messages", 10_000) is None
    other = GraphError("Resource not found.", status=400, code="x")
    assert subscriptions.allowed_lifetime(other, "chatMessages", 4_200) is None


@pytest.mark.django_db(transaction=True)
def test_the_mailbox_in_flight_limit_holds_across_worker_processes(
    graph_settings, emulator, mailbox
):
    """Graph allows four concurrent requests per app and mailbox, whichever process sends
    them: two workers with six requests each must never have more than four in flight."""
    auth.app_token()  # the credential store, bootstrapped once for both workers
    emulator.control.inject_fault(path=f"/users/{mailbox}/messages", kind="latency", latency_ms=400)
    env = subprocess_env(
        MICROSOFT_TENANT_ID=emulator.tenant_id,
        MICROSOFT_CLIENT_ID=emulator.client_id,
        MICROSOFT_CLIENT_SECRET=emulator.client_secret,
        MICROSOFT_AUTHORITY_HOST=emulator.authority_host,
        MICROSOFT_GRAPH_URL=emulator.graph_url,
        MICROSOFT_CA_BUNDLE=emulator.ca_path,
        MICROSOFT_ALLOW_EMULATOR="true",
        GRAPH_MAX_RETRIES="0",
    )
    mark = len(emulator.control.requests_log())
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integrations.microsoft.mailbox_burst", mailbox, "6"],
            env=env,
            cwd=settings.BASE_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-2000:]
        assert out.splitlines()[0] == "0", out
    calls = [
        c
        for c in emulator.control.requests_log(since=mark)
        if c["path"].endswith(f"/users/{mailbox}/messages")
    ]
    assert len(calls) == 12
    assert [c["status"] for c in calls] == [200] * 12  # no MailboxConcurrency 429
    assert not MailboxLease.objects.exists()  # every slot given back
