"""The inbox backlog (the inbox is the queue): one definition, shown by the dashboard, the queue
API, /metrics and an alert."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.microsoft import inbox
from integrations.microsoft.models import MonitoredUser, NotificationInbox
from portal.alerts import services
from portal.alerts.models import Alert
from tests.integrations.microsoft.webhook_support import make_sub

pytestmark = pytest.mark.django_db


def waiting(minutes: float, count: int = 3) -> None:
    user = MonitoredUser.objects.create(identifier="fig@x.test", graph_id="g-fig")
    sub = make_sub(user, graph_id="sub-fig")
    now = timezone.now()
    NotificationInbox.objects.bulk_create(
        NotificationInbox(
            dedupe_key=f"k{n}",
            batch="b",
            subscription=sub,
            subscription_graph_id=sub.graph_id,
            monitored_user=user,
            kind="messages",
            change_type="created",
            resource=f"r{n}",
            received_at=now - timedelta(minutes=minutes) + timedelta(seconds=n),
        )
        for n in range(count)
    )


def test_the_api_metrics_and_dashboard_show_the_backlog(client, personas):
    client.force_login(personas["viewer"])
    queue = client.get("/api/metrics/queue").json()
    assert queue["notificationsPending"] == 0 and queue["oldestNotificationSeconds"] == 0
    assert "no notification waiting" in client.get("/").content.decode()
    waiting(minutes=3)
    queue = client.get("/api/metrics/queue").json()
    assert queue["notificationsPending"] == 3
    assert 179 <= queue["oldestNotificationSeconds"] <= 200
    body = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    assert "fleet_inbox_pending 3.0" in body and "fleet_inbox_oldest_seconds 1" in body
    page = client.get("/").content.decode()
    assert "3 waiting, oldest 3 min" in page


def test_a_stale_backlog_fires_the_alert_and_draining_resolves_it():
    services.evaluate_all()
    assert not Alert.objects.filter(rule="inbox_stale", state="firing").exists()
    waiting(minutes=11)
    assert "inbox_stale" in {event.rule for event in services.evaluate_all()}
    alert = Alert.objects.get(rule="inbox_stale")
    assert alert.state == "firing" and alert.value >= 660
    inbox.drain_pending()
    services.evaluate_all()
    assert Alert.objects.get(rule="inbox_stale").state == "ok"
