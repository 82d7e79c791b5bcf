"""The send API: validation, Idempotency-Key semantics, reading, listing and cancelling."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.microsoft.messaging.delivery import deliver
from integrations.microsoft.models import MonitoredUser, OutboundMessage
from portal.access import service_clients
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.api import idempotency
from portal.api.models import IdempotencyRecord
from portal.audit.models import AuditEvent
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db
SENDER = "dispatch@fleet.example"
MAIL = {
    "channel": "mail",
    "from": SENDER,
    "to": ["driver@fleet.example"],
    "subject": "Route change",
    "body": "Take the A7.",
    "importance": "high",
}


@pytest.fixture
def fleet(db):
    MonitoredUser.objects.create(identifier=SENDER)
    _client, raw = service_clients.create_client(
        Actor.system("tests"), "fleet-api", ["messages:send", "messages:read"]
    )
    return raw


def post(client, token, body, key="k-1", **extra):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    payload = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(
        "/api/messages", data=payload, content_type="application/json", **headers, **extra
    )


def get(client, token, path, **query):
    return client.get(path, query, HTTP_AUTHORIZATION=f"Bearer {token}")


def test_a_mail_is_queued_once_with_a_location_and_audited_under_the_client(client, fleet):
    response = post(client, fleet, MAIL)
    assert response.status_code == 202, response.content
    data = response.json()
    assert response["Location"] == f"/api/messages/{data['id']}"
    assert data["status"] == "queued" and data["channel"] == "mail"
    assert data["to"] == ["driver@fleet.example"] and data["importance"] == "high"
    assert data["body"] == "Take the A7." and data["subject"] == "Route change"
    message = OutboundMessage.objects.get()
    assert message.created_by == "client:fleet-api" and message.importance == "high"
    assert Job.objects.get().job_type == "graph.send_mail"
    event = AuditEvent.objects.get(action="message.send")
    assert (event.actor_type, event.actor_name) == ("client", "fleet-api")
    assert event.params["idempotency_key"] == "k-1"


def test_the_same_key_and_body_return_the_original(client, fleet):
    first = post(client, fleet, MAIL).json()
    again = post(client, fleet, dict(reversed(list(MAIL.items()))))  # same JSON, other order
    assert again.status_code == 202 and again["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first["id"]
    assert OutboundMessage.objects.count() == 1 and Job.objects.count() == 1
    assert AuditEvent.objects.filter(action="message.send").count() == 1


def test_the_same_key_with_another_body_is_422(client, fleet):
    post(client, fleet, MAIL)
    response = post(client, fleet, {**MAIL, "body": "Take the A9."})
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert OutboundMessage.objects.count() == 1


def test_a_concurrent_duplicate_is_409_and_an_abandoned_claim_is_taken_over(client, fleet):
    client_row = service_clients.get_client("fleet-api")
    actor = Actor(kind="client", name="fleet-api", role="service-client", client=client_row)
    record = idempotency.claim(actor, "POST /api/messages", "k-1", MAIL).record  # in flight
    response = post(client, fleet, MAIL)
    assert response.status_code == 409 and response.json()["error"] == "idempotency_key_in_use"
    assert not OutboundMessage.objects.exists()
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        created_at=timezone.now() - timedelta(minutes=5)
    )  # the first request died
    assert post(client, fleet, MAIL).status_code == 202
    assert OutboundMessage.objects.count() == 1


def test_keys_are_per_client_and_expire_after_their_ttl(client, fleet):
    _other, other = service_clients.create_client(
        Actor.system("tests"), "dispatch-worker", ["messages:send"]
    )
    first = post(client, fleet, MAIL).json()
    second = post(client, other, MAIL).json()
    assert first["id"] != second["id"]
    record = IdempotencyRecord.objects.get(owner__startswith="client:", resource_id=first["id"])
    assert record.expires_at - record.created_at >= timedelta(hours=24)
    IdempotencyRecord.objects.filter(pk=record.pk).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )
    reused = post(client, fleet, {**MAIL, "body": "A new request after a day"})
    assert reused.status_code == 202 and reused.json()["id"] not in (first["id"], second["id"])
    # The key names the new message; the first keeps it as a retired key, and its Graph tag.
    old, new = (
        OutboundMessage.objects.get(pk=first["id"]),
        OutboundMessage.objects.get(pk=reused.json()["id"]),
    )
    assert new.idempotency_key == f"api {record.owner} k-1"
    assert old.idempotency_key == f"api~{old.pk} {record.owner} k-1" and old.client_key == "k-1"
    assert old.graph_tag != new.graph_tag


def test_a_message_has_one_key_the_clients_and_keeps_it_after_the_record_is_pruned(client, fleet):
    message_id = post(client, fleet, MAIL, key="order-4711").json()["id"]
    message = OutboundMessage.objects.get(pk=message_id)
    owner = IdempotencyRecord.objects.get().owner
    assert message.idempotency_key == f"api {owner} order-4711"
    assert message.job.idempotency_key is None and message.graph_tag.startswith("msg:")
    IdempotencyRecord.objects.all().delete()  # pruned after API_IDEMPOTENCY_TTL_HOURS
    assert list(OutboundMessage.objects.with_key("order-4711")) == [message]
    assert message.client_key == "order-4711"


def test_the_idempotency_key_is_required_and_checked(client, fleet):
    response = post(client, fleet, MAIL, key=None)
    assert response.status_code == 400 and response.json()["error"] == "idempotency_key_required"
    assert post(client, fleet, MAIL, key="has space").status_code == 400
    assert post(client, fleet, MAIL, key='"quoted-key"').status_code == 202
    assert post(client, fleet, MAIL, key="quoted-key").json()["id"] == (
        OutboundMessage.objects.get().pk
    )  # the sf-string and the bare token are one key


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"channel": "fax"}, "channel"),
        ({"from": None}, "from"),
        ({"from": "not-an-address"}, "from"),
        ({"from": "stranger@elsewhere.example"}, "from"),
        ({"to": ["ok@fleet.example", "broken@"]}, "to[1]"),
        ({"to": "driver@fleet.example"}, "to"),
        ({"to": [], "cc": [], "bcc": []}, "to"),
        ({"to": [f"d{i}@fleet.example" for i in range(501)]}, "to"),
        ({"body": ""}, "body"),
        ({"body": 7}, "body"),
        ({"body": "x" * (4 * 1024 * 1024 + 1)}, "body"),
        ({"contentType": "markdown"}, "contentType"),
        ({"importance": "urgent"}, "importance"),
        ({"too": ["typo@fleet.example"]}, "too"),
    ],
)
def test_bad_mail_input_is_a_400_naming_the_field(client, fleet, change, field):
    response = post(client, fleet, {**MAIL, **change})
    assert response.status_code == 400, response.content[:200]
    assert response.json()["field"] == field
    assert not OutboundMessage.objects.exists() and not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "teams", "body": "hi"}, "chatId"),
        (
            {"channel": "teams", "chatId": "19:a", "toUser": "d@fleet.example", "body": "hi"},
            "chatId",
        ),
        ({"channel": "teams", "teamId": "t1", "body": "hi"}, "channelId"),
        ({"channel": "teams", "toUser": "nobody", "body": "hi"}, "toUser"),
        ({"channel": "teams", "chatId": "19:a", "body": "x" * (28 * 1024 + 1)}, "body"),
        ({"channel": "teams", "chatId": "19:a", "body": "hi", "subject": "no"}, "subject"),
    ],
)
def test_bad_teams_input_is_a_400_naming_the_field(client, fleet, body, field):
    response = post(client, fleet, body)
    assert response.status_code == 400 and response.json()["field"] == field


def test_teams_targets_are_queued(client, fleet):
    chat = post(client, fleet, {"channel": "teams", "chatId": "19:abc", "body": "hi"}, key="a")
    user = post(
        client, fleet, {"channel": "teams", "toUser": "d@fleet.example", "body": "hi"}, key="b"
    )
    channel = post(
        client,
        fleet,
        {
            "channel": "teams",
            "teamId": "t1",
            "channelId": "c1",
            "body": "hi",
            "contentType": "html",
        },
        key="c",
    )
    assert [r.status_code for r in (chat, user, channel)] == [202, 202, 202]
    assert user.json()["toUser"] == "d@fleet.example"
    assert sorted(OutboundMessage.objects.values_list("channel", flat=True)) == [
        "teams_channel",
        "teams_chat",
        "teams_chat",
    ]


def test_a_client_without_the_send_scope_is_refused(client, fleet):
    _c, reader = service_clients.create_client(Actor.system("tests"), "reader", ["messages:read"])
    assert post(client, reader, MAIL).status_code == 403
    assert not OutboundMessage.objects.exists()


def test_read_one_and_list_with_a_cursor_only_own_messages(client, fleet):
    ids = [
        post(client, fleet, {**MAIL, "body": f"n{i}"}, key=f"k{i}").json()["id"] for i in range(5)
    ]
    _c, other = service_clients.create_client(
        Actor.system("tests"), "other", ["messages:send", "messages:read"]
    )
    foreign = post(client, other, MAIL).json()["id"]
    one = get(client, fleet, f"/api/messages/{ids[0]}").json()
    assert one["id"] == ids[0] and one["attempts"] == 0 and one["graph"]["messageId"] is None
    assert get(client, fleet, f"/api/messages/{foreign}").status_code == 404
    assert get(client, fleet, "/api/messages/nope").status_code == 404
    page = get(client, fleet, "/api/messages", limit=2).json()
    assert [m["id"] for m in page["messages"]] == ids[:2]
    page2 = get(client, fleet, "/api/messages", limit=2, after=page["nextCursor"]).json()
    assert [m["id"] for m in page2["messages"]] == ids[2:4]
    rest = get(client, fleet, "/api/messages", limit=2, after=page2["nextCursor"]).json()
    assert [m["id"] for m in rest["messages"]] == ids[4:] and rest["nextCursor"] is None
    assert get(client, fleet, "/api/messages", status="sent").json()["messages"] == []
    assert len(get(client, fleet, "/api/messages", channel="mail").json()["messages"]) == 5
    assert get(client, fleet, "/api/messages", status="lost").status_code == 400
    assert get(client, fleet, "/api/messages", channel="fax").status_code == 400


def test_bodies_are_hidden_from_those_who_may_not_read_them(client, fleet, vera_viewer):
    message_id = post(client, fleet, MAIL).json()["id"]

    raw = create_token(Actor.system("tests"), vera_viewer.username, "v")[1]
    seen = get(client, raw, f"/api/messages/{message_id}").json()
    assert seen["to"] == ["driver@fleet.example"]
    assert "body" not in seen and "subject" not in seen


def test_cancel_while_queued_and_409_once_sent(client, fleet):
    message_id = post(client, fleet, MAIL).json()["id"]
    url = f"/api/messages/{message_id}/cancel"
    response = client.post(url, HTTP_AUTHORIZATION=f"Bearer {fleet}")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert OutboundMessage.objects.get().job.status == Job.Status.CANCELLED
    assert AuditEvent.objects.filter(action="message.cancel", actor_name="fleet-api").exists()
    again = client.post(url, HTTP_AUTHORIZATION=f"Bearer {fleet}")
    assert again.status_code == 409
    sent_id = post(client, fleet, {**MAIL, "body": "other"}, key="k-2").json()["id"]
    OutboundMessage.objects.filter(pk=sent_id).update(status="sent", step="done")
    assert (
        client.post(
            f"/api/messages/{sent_id}/cancel", HTTP_AUTHORIZATION=f"Bearer {fleet}"
        ).status_code
        == 409
    )
    OutboundMessage.objects.filter(pk=sent_id).update(status="sending", step="send_requested")
    response = client.post(f"/api/messages/{sent_id}/cancel", HTTP_AUTHORIZATION=f"Bearer {fleet}")
    assert response.status_code == 409 and "may already have reached" in response.json()["detail"]


def test_a_cancelled_message_is_never_sent_by_its_job(client, fleet):
    message_id = post(client, fleet, MAIL).json()["id"]
    client.post(f"/api/messages/{message_id}/cancel", HTTP_AUTHORIZATION=f"Bearer {fleet}")
    assert deliver(message_id) == "cancelled"  # e.g. a run already handed to a worker
    assert OutboundMessage.objects.get().status == "cancelled"


def test_the_openapi_document_describes_the_send_api(client):
    document = client.get("/api/openapi.json").json()
    send = document["paths"]["/api/messages"]["post"]
    assert {"202", "409", "422"} <= set(send["responses"])
    assert any(
        p["name"] == "Idempotency-Key" and p["in"] == "header" and p["required"]
        for p in send["parameters"]
    )
    assert "get" in document["paths"]["/api/messages"]
    assert "post" in document["paths"]["/api/messages/{messageId}/cancel"]
