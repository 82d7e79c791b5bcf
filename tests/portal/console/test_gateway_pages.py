"""Console pages of the gateway: messages (tabs, filters, groups, detail, resend, cancel)
and event endpoints (health, deliveries, actions)."""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from integrations.microsoft.messaging import outbox
from integrations.microsoft.models import GraphCall, MonitoredUser, OutboundMessage
from portal.audit.models import AuditEvent
from portal.events.models import EventEndpoint
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db


@pytest.fixture
def failed(db):
    message = outbox.send_mail(
        "dispatch@fleet.example",
        ["d@fleet.example"],
        "Secret route",
        "The text of the message",
        created_by="client:fleet-api",
    )
    OutboundMessage.objects.filter(pk=message.pk).update(
        status="failed", last_error="ErrorInvalidRecipients"
    )
    message.job.__class__.objects.filter(pk=message.job_id).update(
        status="dead", error_signature="abc123", last_error="ErrorInvalidRecipients"
    )
    return message


def test_viewers_see_failures_grouped_but_not_the_text(client, vera_viewer, failed):
    client.force_login(vera_viewer)
    page = client.get(reverse("console:messages"))
    assert page.status_code == 200
    assert b"ErrorInvalidRecipients" in page.content and b"client:fleet-api" in page.content
    assert b"Retry all in this group" not in page.content  # viewers cannot retry
    detail = client.get(reverse("console:message", args=[failed.pk]))
    assert b"d@fleet.example" in detail.content
    assert b"The text of the message" not in detail.content
    assert b"Secret route" not in detail.content
    assert client.post(reverse("console:message_resend", args=[failed.pk])).status_code == 403


def test_filters_narrow_the_list(client, otto_operator, failed):
    client.force_login(otto_operator)
    other = client.get(reverse("console:messages"), {"client": "client:other"})
    assert f"#{failed.pk}".encode() not in other.content
    mine = client.get(
        reverse("console:messages"), {"recipient": "d@fleet.example", "channel": "mail"}
    )
    assert f"#{failed.pk}".encode() in mine.content
    assert client.get(reverse("console:messages"), {"date_from": "nope"}).status_code == 200


def test_operators_read_resend_and_cancel(client, otto_operator, failed):
    client.force_login(otto_operator)
    detail = client.get(reverse("console:message", args=[failed.pk]))
    assert b"The text of the message" in detail.content
    response = client.post(reverse("console:message_resend", args=[failed.pk]))
    resend = OutboundMessage.objects.exclude(pk=failed.pk).get()
    assert response["Location"] == reverse("console:message", args=[resend.pk])
    assert resend.resend_of_id == failed.pk and resend.status == "queued"
    client.post(reverse("console:message_cancel", args=[resend.pk]))
    resend.refresh_from_db()
    assert resend.status == "cancelled"
    actions = set(
        AuditEvent.objects.filter(actor_name="otto-operator").values_list("action", flat=True)
    )
    assert {"message.resend", "message.cancel"} <= actions


def test_admins_manage_endpoints_in_the_console(client, ada_admin, otto_operator, settings):
    settings.DEBUG = True
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    client.force_login(otto_operator)
    assert client.get(reverse("console:event_endpoints")).status_code == 403
    client.force_login(ada_admin)
    response = client.post(
        reverse("console:event_endpoint_create"),
        {"url": "http://127.0.0.1:9/hook", "description": "dispatch"},
    )
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    assert response.context["secret"].startswith("whsec_")
    endpoint = EventEndpoint.objects.get()
    refused = client.post(
        reverse("console:event_endpoint_create"), {"url": "https://169.254.169.254/"}
    )
    assert refused.status_code == 400 and b"link-local" in refused.content
    for action in ("pause", "resume", "test"):
        assert (
            client.post(
                reverse("console:event_endpoint_action", args=[endpoint.pk, action])
            ).status_code
            == 302
        )
    rotated = client.post(reverse("console:event_endpoint_action", args=[endpoint.pk, "rotate"]))
    assert rotated.context["secret"].startswith("whsec_")
    page = client.get(reverse("console:event_endpoint", args=[endpoint.pk]))
    assert b"(test)" in page.content and rotated.context["secret"].encode() not in page.content
    assert (
        client.post(
            reverse("console:event_endpoint_action", args=[endpoint.pk, "explode"])
        ).status_code
        == 404
    )


def test_a_sent_mails_page_lists_the_graph_calls_of_its_attempts(client, otto_operator):
    """Graph calls name a monitored mailbox by its Graph id, not the sender's UPN: the page
    said "None recorded" for a mail sent through Graph."""
    now = timezone.now()
    MonitoredUser.objects.create(
        identifier="dispatch@fleetdemo.example",
        upn="dispatch@fleetdemo.example",
        graph_id="5f1e0b2a-0000-4000-8000-00000000000a",
    )
    job = Job.objects.create(
        job_type="graph.send_mail",
        status="succeeded",
        started_at=now - timedelta(seconds=5),
        finished_at=now,
    )
    message = OutboundMessage.objects.create(
        channel="mail",
        status="sent",
        body="x",
        idempotency_key="sent-through-graph",
        sender="Dispatch@fleetdemo.example",
        to_recipients=["driver@fleetdemo.example"],
        job=job,
    )
    for route, request_id in (
        ("/users/{id}/messages", "11111111-aaaa-4bbb-8ccc-000000000001"),
        ("/users/{id}/messages/{id}/send", "11111111-aaaa-4bbb-8ccc-000000000002"),
    ):
        GraphCall.objects.create(
            created_at=now - timedelta(seconds=2),
            method="POST",
            route=route,
            status=202,
            request_id=request_id,
            mailbox="5f1e0b2a-0000-4000-8000-00000000000a",
        )
    client.force_login(otto_operator)
    body = client.get(f"/messages/{message.pk}/").content.decode()
    assert "None recorded" not in body
    assert "/graph/?request_id=11111111-aaaa-4bbb-8ccc-000000000001" in body
    assert "11111111-aaaa-4bbb-8ccc-000000000001" in body
    assert "11111111-aaaa-4bbb-8ccc-000000000002" in body


def test_an_api_message_is_found_and_shown_by_its_clients_key(client, otto_operator, failed):
    """The message's one key is its client's Idempotency-Key: the filter, the search and
    the detail page find and show it, also after the API's record of the key is pruned."""
    OutboundMessage.objects.filter(pk=failed.pk).update(
        idempotency_key=OutboundMessage.api_key("client:7", "order-4711")
    )
    client.force_login(otto_operator)
    listed = client.get(reverse("console:messages"), {"key": "order-4711"})
    assert f"#{failed.pk}".encode() in listed.content
    assert f"#{failed.pk}".encode() not in (
        client.get(reverse("console:messages"), {"key": "order-4712"}).content
    )
    detail = client.get(reverse("console:message", args=[failed.pk]))
    assert b"<code>order-4711</code> (the client's)" in detail.content
