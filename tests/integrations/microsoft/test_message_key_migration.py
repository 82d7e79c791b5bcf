"""The migration to one idempotency key per message keeps every existing key and record
valid: a request replayed with a key from before still returns its original message (no
second message, no second send), a message in flight keeps the tag its draft carries, and a
caller's own key still finds its message."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from integrations.microsoft.messaging import outbox
from integrations.microsoft.models import MonitoredUser, OutboundMessage
from portal.access import service_clients
from portal.access.actors import Actor
from portal.api import idempotency
from portal.jobs.models import Job

BEFORE = [("microsoft", "0018_tenant_chats"), ("api", "0002_idempotencyrecord")]
AFTER = [("microsoft", "0019_one_key_per_message")]
SENDER = "dispatch@fleet.example"
MAIL = {"channel": "mail", "from": SENDER, "to": ["driver@fleet.example"], "body": "Gate 4."}


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_schema(transactional_db):
    apps = migrate(BEFORE)
    yield apps
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_old_keys_and_records_stay_valid(old_schema, client):
    MonitoredUser.objects.create(identifier=SENDER)
    fleet, raw = service_clients.create_client(
        Actor.system("tests"), "fleet-api", ["messages:send", "messages:read"]
    )
    owner = f"client:{fleet.pk}"
    Message = old_schema.get_model("microsoft", "OutboundMessage")
    Record = old_schema.get_model("api", "IdempotencyRecord")
    now = timezone.now()
    # As the old API left them: the record, and the message keyed by the record's id.
    record = Record.objects.create(
        owner=owner,
        endpoint="POST /api/messages",
        key="order-4711",
        fingerprint=idempotency.fingerprint(MAIL),
        state="done",
        response_status=202,
        created_at=now,
        expires_at=now + timedelta(hours=24),
    )
    fields = {"channel": "mail", "sender": SENDER, "to_recipients": ["driver@fleet.example"]}
    api_sent = Message.objects.create(
        idempotency_key=f"msg:api-{record.pk}",
        created_by="client:fleet-api",
        step="draft_created",  # in flight: its draft in the mailbox carries this tag
        body="Gate 4.",
        **fields,
    )
    Record.objects.filter(pk=record.pk).update(resource_id=api_sent.pk)
    notified = Message.objects.create(
        idempotency_key="msg:approval-4-request", body="Approve?", **fields
    )

    migrate(AFTER)
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    api_sent = OutboundMessage.objects.get(pk=api_sent.pk)
    assert api_sent.graph_tag == f"msg:api-{record.pk}"  # the draft is still found
    assert api_sent.idempotency_key == f"api {owner} order-4711"
    assert api_sent.client_key == "order-4711"
    assert list(OutboundMessage.objects.with_key("order-4711")) == [api_sent]
    replay = client.post(
        "/api/messages",
        data=json.dumps(MAIL),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {raw}",
        HTTP_IDEMPOTENCY_KEY="order-4711",
    )
    assert replay.status_code == 202 and replay["Idempotent-Replayed"] == "true"
    assert replay.json()["id"] == api_sent.pk
    assert OutboundMessage.objects.count() == 2 and not Job.objects.exists()

    notified = OutboundMessage.objects.get(pk=notified.pk)
    assert notified.graph_tag == "msg:approval-4-request"
    again = outbox.send_mail(
        SENDER, ["driver@fleet.example"], "", "Approve?", idempotency_key="approval-4-request"
    )
    assert again.pk == notified.pk and not Job.objects.exists()
