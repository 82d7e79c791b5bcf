"""The send API end to end against the emulator over HTTPS: a service client sends through
POST /api/messages and Graph receives each message exactly once, across a retried request
and a worker that dies mid-send."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.microsoft.models import MonitoredUser, OutboundMessage
from portal.access import service_clients
from portal.access.actors import Actor
from portal.events.models import Event
from portal.jobs.models import Job
from portal.jobs.runner import release_due_jobs
from portal.jobs.watchdog import requeue_lost_jobs
from tests.conftest import run_queued_jobs
from tests.integrations.microsoft.test_messaging import Crash, crash_after, mails, posts

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet_api(db) -> str:
    return service_clients.create_client(
        Actor.system("tests"), "fleet-api", ["messages:send", "messages:read"]
    )[1]


def send(client, token, body, key):
    return client.post(
        "/api/messages",
        data=json.dumps(body),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def status_of(client, token, message_id):
    return client.get(f"/api/messages/{message_id}", HTTP_AUTHORIZATION=f"Bearer {token}").json()


def test_mail_through_the_api_reaches_graph_once_despite_a_retry_and_a_dead_worker(
    client, graph_settings, emulator, people, fleet_api, monkeypatch
):
    sender, to = people
    MonitoredUser.objects.create(identifier=sender)
    body = {
        "channel": "mail",
        "from": sender,
        "to": [to],
        "subject": "Depot 4 closed",
        "body": "Go to depot 5.",
        "importance": "high",
    }
    first = send(client, fleet_api, body, "ticket-4711")
    assert first.status_code == 202
    message_id = first.json()["id"]
    # The Fleet side timed out and retries the same request: the same message, no new job.
    assert send(client, fleet_api, body, "ticket-4711").json()["id"] == message_id
    assert Job.objects.count() == 1

    crash_after(monkeypatch, "POST", "/send")  # the worker dies after Graph sent it
    with pytest.raises(Crash):
        run_queued_jobs()
    monkeypatch.undo()
    assert status_of(client, fleet_api, message_id)["status"] == "sending"
    job = OutboundMessage.objects.get(pk=message_id).job
    Job.objects.filter(pk=job.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert requeue_lost_jobs() == 1
    Job.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())
    assert release_due_jobs() == 1
    assert run_queued_jobs() == ["succeeded"]

    sent = mails(emulator, "Depot 4 closed")
    assert len(sent) == 1 and sent[0]["to"] == [to]
    state = status_of(client, fleet_api, message_id)
    assert state["status"] == "sent" and state["attempts"] == 2
    assert state["graph"]["messageId"] and state["graph"]["internetMessageId"]
    assert state["sentAt"]
    # The outcome is on the feed once (the run that crashed recorded nothing).
    sent_events = Event.objects.filter(type="message.sent", data__message=message_id)
    assert sent_events.count() == 1
    assert sent_events.get().data["internetMessageId"] == state["graph"]["internetMessageId"]
    # A late retry of the original request still answers with that message, unchanged.
    assert send(client, fleet_api, body, "ticket-4711").json()["status"] == "sent"
    assert len(mails(emulator, "Depot 4 closed")) == 1


def test_a_teams_chat_message_and_a_one_on_one_to_a_user_go_out_once(
    client,
    sender_connected,
    emulator,
    tenant,
    bot,
    bot_chat,
    fleet_api,
):
    chat = send(
        client,
        fleet_api,
        {"channel": "teams", "chatId": bot_chat, "body": "Truck 9 arrived"},
        "t-1",
    )
    driver = next(
        u
        for u in tenant["users"]
        if u["id"] != bot["id"] and not u["userPrincipalName"].startswith("fleet.bot")
    )
    direct = send(
        client,
        fleet_api,
        {
            "channel": "teams",
            "toUser": driver["userPrincipalName"],
            "body": "Your shift starts at 6",
        },
        "t-2",
    )
    assert chat.status_code == 202 and direct.status_code == 202, direct.content
    assert sorted(run_queued_jobs()) == ["succeeded", "succeeded"]
    assert len(posts(emulator, "Truck 9 arrived")) == 1
    sent = posts(emulator, "Your shift starts at 6")
    assert len(sent) == 1
    message = OutboundMessage.objects.get(pk=direct.json()["id"])
    assert message.status == "sent" and message.chat_id == sent[0]["chat_id"]
    assert driver["id"] in message.chat_id and bot["id"] in message.chat_id
    # A second message to the same user lands in the same 1:1 chat.
    send(
        client,
        fleet_api,
        {"channel": "teams", "toUser": driver["userPrincipalName"], "body": "And bring the keys"},
        "t-3",
    )
    run_queued_jobs()
    assert posts(emulator, "And bring the keys")[0]["chat_id"] == message.chat_id


def test_an_unknown_chat_is_the_messages_failure_not_a_500(
    client, sender_connected, emulator, fleet_api
):
    response = send(
        client,
        fleet_api,
        {"channel": "teams", "chatId": "19:nope@thread.v2", "body": "hello?"},
        "t-9",
    )
    assert response.status_code == 202
    run_queued_jobs()
    state = status_of(client, fleet_api, response.json()["id"])
    assert state["status"] == "failed" and "not found" in state["lastError"].lower()
    failed = Event.objects.get(type="message.failed")
    assert failed.data["message"] == state["id"] and failed.data["error"]
