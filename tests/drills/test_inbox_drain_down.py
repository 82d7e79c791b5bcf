"""Drill: the inbox drain is down (no `drain_inbox` process, no worker's sweep).

Before: a waiting notification alerted after 10 minutes, and only if a worker was there to
evaluate the rules; the alert named no page.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta

import pytest
import requests
import time_machine
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from integrations.microsoft.models import NotificationInbox
from portal.alerts.models import Alert
from tests.conftest import subprocess_env
from tests.drills.conftest import alert_state, rule, wait_for
from tests.integrations.microsoft.webhook_support import make_sub, notification

pytestmark = pytest.mark.django_db(transaction=True)

RULE = "inbox_stale"
SECRET = "drill-client-state"


@pytest.fixture
def drain_process(tmp_path):
    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "drain_inbox"],
            env=subprocess_env(
                LOG_LEVEL="WARNING",
                INBOX_DRAIN_IDLE_SECONDS="0.2",
                INBOX_DRAIN_ALIVE_FILE=str(tmp_path / "drain.alive"),
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=15)


def test_notifications_waiting_for_a_drain_alert_and_clear_once_it_runs(
    webhook_settings, live_server, monitored, drain_process, client, otto_operator
):
    sub = make_sub(monitored, graph_id="drill-sub", client_state=SECRET)
    session = requests.Session()
    session.trust_env = False
    answer = session.post(
        f"{live_server.url}/api/webhooks/mail",
        data=json.dumps({"value": [notification(sub.graph_id, SECRET)]}),
        timeout=10,
    )
    assert answer.status_code == 202
    assert NotificationInbox.objects.pending().count() == 1

    # Minutes pass with nothing draining; the dashboard being looked at evaluates the rules.
    client.force_login(otto_operator)
    with time_machine.travel(timezone.now() + timedelta(minutes=3)):
        dashboard = client.get(reverse("console:dashboard"))
        assert Alert.objects.get(rule=RULE).state == "firing"
    inbox = next(h for h in dashboard.context["health"] if h["name"] == "Inbox")
    assert inbox["state"] == "bad" and "inbox drain" in inbox["text"]
    banner = re.search(
        r'<li id="banner-inbox_stale">.*?<a href="([^"]+)"><strong>Notifications not processed',
        dashboard.content.decode(),
    )
    assert banner, "the dashboard's banner names the alert"

    # Its link is the job types' pause/resume: notification processing is one of them.
    link = banner.group(1)
    assert link == str(rule(RULE).link) == reverse("console:jobs") + "#job-types"
    page = client.get(link).content.decode()
    assert 'id="job-types"' in page and 'id="notification-drain"' in page

    # The fix: the drain runs again; the notification is processed and the alert clears.
    drain_process()
    wait_for(lambda: not NotificationInbox.objects.pending().exists(), timeout=60)
    assert alert_state(RULE) == "ok"
    dashboard = client.get(reverse("console:dashboard")).content.decode()
    assert "banner-inbox_stale" not in dashboard
