"""The runbook's "Re-sync Messages", "Debug Sync Issues" and "Monitoring" curls."""

import json

import pytest

from integrations.microsoft.models import GraphCall, MonitoredUser, SyncState
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.audit.models import AuditEvent
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db
UPN = "user@example.com"


@pytest.fixture
def user(db):
    user = MonitoredUser.objects.create(
        identifier=UPN, upn=UPN, graph_id="0f1e2d3c-aaaa", display_name="Example User"
    )
    SyncState.objects.create(
        monitored_user=user,
        kind="messages",
        status="idle",
        delta_link="https://graph/…deltatoken=SECRETCURSOR",
        item_count=12,
    )
    return user


@pytest.fixture
def bearer(personas):
    def make(role):
        raw = create_token(Actor.system("tests"), personas[role].username, role)[1]
        return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}

    return make


def curl_d(client, path, headers, body):
    """`curl -X POST … -d '{json}'`: JSON labelled as a form."""
    return client.post(
        path, data=json.dumps(body), content_type="application/x-www-form-urlencoded", **headers
    )


def test_reset_sync_state_for_a_user(client, user, bearer):
    response = curl_d(
        client, "/api/sync/reset", bearer("operator"), {"userId": UPN, "resourceType": "messages"}
    )
    assert response.status_code == 200, response.content
    state = SyncState.objects.get(monitored_user=user, kind="messages")
    assert state.delta_link == "" and state.reset_requested
    assert AuditEvent.objects.get(action="sync.reset").actor_type == "token"


def test_trigger_full_sync(client, user, bearer):
    response = curl_d(client, "/api/sync/full", bearer("operator"), {"userId": UPN})
    assert response.status_code == 202
    jobs = response.json()["jobs"]
    assert set(jobs) == set(user.kinds)
    assert Job.objects.filter(pk__in=jobs.values(), job_type="graph.sync_delta").count() == 2


def test_force_delta_sync_by_graph_id(client, user, bearer):
    response = curl_d(
        client,
        "/api/sync/delta",
        bearer("support"),
        {"userId": user.graph_id, "resourceType": "messages"},
    )
    assert response.status_code == 202
    assert list(response.json()["jobs"]) == ["messages"]


def test_check_sync_state_without_revealing_the_cursor(client, user, bearer):
    response = client.get(f"/api/sync/state/{UPN}/messages", **bearer("viewer"))
    assert response.status_code == 200
    body = response.json()
    assert body["hasDeltaToken"] is True and body["itemCount"] == 12
    assert "SECRETCURSOR" not in response.content.decode()


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({}, 400, "invalid_body"),
        ({"userId": 7}, 400, "invalid_body"),
        ({"userId": "nobody@example.com", "resourceType": "messages"}, 404, "not_found"),
        ({"userId": UPN, "resourceType": "calendar"}, 400, "invalid_body"),
        ({"userId": UPN}, 400, "invalid_body"),  # reset needs the resource type
    ],
)
def test_reset_refuses_bad_bodies_with_a_reason(client, user, bearer, body, status, error):
    response = curl_d(client, "/api/sync/reset", bearer("operator"), body)
    assert response.status_code == status
    assert response.json()["error"] == error and response.json()["detail"]


def test_support_may_delta_but_not_reset_or_full(client, user, bearer):
    headers = bearer("support")
    assert (
        curl_d(
            client, "/api/sync/reset", headers, {"userId": UPN, "resourceType": "messages"}
        ).status_code
        == 403
    )
    assert curl_d(client, "/api/sync/full", headers, {"userId": UPN}).status_code == 403


def test_sync_metrics_from_localhost_without_a_token(client, user):
    body = client.get("/api/metrics/sync").json()
    assert body["monitoredUsers"] == 1
    assert body["byResourceType"]["messages"]["states"] == 1


def test_graph_metrics(client):
    GraphCall.objects.create(method="GET", route="/users", status=200)
    GraphCall.objects.create(
        method="GET", route="/users/{id}/messages/delta", status=429, throttled=True, retry_after=10
    )
    body = client.get("/api/metrics/graph").json()
    assert (body["calls"], body["throttled"], body["errorRate"]) == (2, 1, 0.5)
    assert body["throttledByRoute"] == [{"route": "/users/{id}/messages/delta", "count": 1}]


def test_back_off_a_mailbox(client, user, bearer):
    response = curl_d(
        client,
        "/api/graph/mailbox-backoff",
        bearer("operator"),
        {"mailbox": UPN, "minutes": 10, "reason": "429 storm"},
    )
    assert response.status_code == 201, response.content
    assert response.json()["mailbox"] == UPN
    event = AuditEvent.objects.get(action="graph.mailbox_backoff")
    assert (event.actor_type, event.reason) == ("token", "429 storm")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"mailbox": UPN, "minutes": 0, "reason": "x"}, "minutes"),
        ({"mailbox": UPN, "minutes": 1441, "reason": "x"}, "minutes"),
        ({"mailbox": UPN, "minutes": "5", "reason": "x"}, "minutes"),
        ({"mailbox": UPN, "minutes": 5, "reason": ""}, "reason"),
        ({"mailbox": "", "minutes": 5, "reason": "x"}, "mailbox"),
        ({"minutes": 5, "reason": "x"}, "mailbox"),
    ],
)
def test_a_bad_back_off_is_a_400_naming_the_field(client, user, bearer, body, field):
    response = curl_d(client, "/api/graph/mailbox-backoff", bearer("operator"), body)
    assert response.status_code == 400, response.content
    assert response.json()["field"] == field
    assert not AuditEvent.objects.filter(action="graph.mailbox_backoff", outcome="success")


def test_support_may_not_back_off_a_mailbox(client, user, bearer):
    response = curl_d(
        client,
        "/api/graph/mailbox-backoff",
        bearer("support"),
        {"mailbox": UPN, "minutes": 5, "reason": "x"},
    )
    assert response.status_code == 403
