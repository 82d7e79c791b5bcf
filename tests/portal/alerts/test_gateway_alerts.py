"""The gateway's figures: one definition each, used by the alerts and /metrics."""

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.microsoft.models import OutboundMessage
from portal.access.actors import Actor
from portal.alerts import services
from portal.alerts.models import Alert
from portal.events.models import Event, EventEndpoint
from portal.runtime import registry

pytestmark = pytest.mark.django_db


def message(status, **fields):
    return OutboundMessage.objects.create(
        channel="mail",
        status=status,
        body="x",
        idempotency_key=f"k{OutboundMessage.objects.count()}",
        **fields,
    )


def test_failed_and_stale_messages_fire_their_alerts():
    registry.set_value(Actor.system("tests"), "ALERT_MESSAGES_FAILED_IN_WINDOW", 1)
    for _ in range(2):
        message("failed", last_error="boom", last_error_at=timezone.now())
    message("failed", last_error="old", last_error_at=timezone.now() - timedelta(hours=2))
    message("queued", created_at=timezone.now() - timedelta(hours=1))
    assert OutboundMessage.objects.failed_last_hour() == 2
    assert OutboundMessage.objects.oldest_unsent_seconds() >= 3599
    services.evaluate_all()
    assert Alert.objects.get(rule="messages_failed").state == "firing"
    assert Alert.objects.get(rule="message_queue_stale").state == "firing"


def test_failing_endpoints_and_the_backlog_are_counted(client):
    events = [Event.objects.create(type="mail.received", data={"n": i}) for i in range(3)]
    # Delivered up to the first event (ids are not 1, 2, 3 on PostgreSQL: sequences persist).
    EventEndpoint.objects.create(
        url="https://a.example/",
        secret_encrypted="x",
        cursor=events[0].id,
        failing_since=timezone.now(),
    )
    EventEndpoint.objects.create(url="https://b.example/", secret_encrypted="x", state="paused")
    assert EventEndpoint.objects.failing().count() == 1
    assert EventEndpoint.objects.backlog() == 2  # the paused endpoint's backlog is on purpose
    services.evaluate_all()
    assert Alert.objects.get(rule="event_endpoints_failing").state == "firing"
    body = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert "fleet_event_endpoints_failing 1.0" in body and "fleet_event_backlog 2.0" in body


def test_the_dashboard_and_the_api_show_the_same_figures(client, personas):
    events = [Event.objects.create(type="mail.received", data={"n": i}) for i in range(4)]
    EventEndpoint.objects.create(
        url="https://a.example/", secret_encrypted="x", cursor=events[0].id, state="disabled"
    )
    message("failed", last_error="boom", last_error_at=timezone.now())
    message("queued", created_at=timezone.now() - timedelta(minutes=40))
    client.force_login(personas["viewer"])
    figures = client.get("/api/metrics/gateway").json()
    assert figures == {
        "messagesFailedLastHour": 1,
        "oldestQueuedMessageSeconds": figures["oldestQueuedMessageSeconds"],
        "endpointsFailing": 1,
        "eventBacklog": 3,
    }
    assert 2399 <= figures["oldestQueuedMessageSeconds"] <= 2500
    page = client.get("/").content.decode()
    assert 'aria-label="Fleet gateway"' in page
    for number, label in [
        (1, "messages failed (1 h)"),
        ("40 min", "oldest unsent message"),
        (1, "event endpoints failing or disabled"),
        (3, "events waiting for delivery"),
    ]:
        assert f'<span class="num">{number}</span><span class="label">{label}</span>' in page
    # A viewer may read messages, not manage endpoints: only the message tiles are links.
    assert 'href="/messages/?status=failed"' in page
    assert 'href="/event-endpoints/"' not in page
    client.force_login(personas["admin"])
    assert 'href="/event-endpoints/"' in client.get("/").content.decode()
