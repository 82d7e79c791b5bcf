"""Drill: the worker is down.

Before: the rules were evaluated by the worker itself, so with the worker gone nothing told
the dashboard; the alert, when it fired, named no page.
"""

from __future__ import annotations

import os
import re
import signal
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone
from django_q.tasks import async_task

from integrations.microsoft import sync
from portal.alerts.models import Alert
from portal.jobs.models import Job, WorkerHeartbeat
from tests.drills.conftest import rule, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RULE = "worker_down"


def test_a_dead_worker_shows_on_the_dashboard_and_clears_when_one_runs_again(
    graph_settings, emulator, monitored, graph_worker, client, otto_operator
):
    worker = graph_worker()
    async_task("portal.jobs.tasks.heartbeat")  # the minute's schedules, in the worker
    wait_for(lambda: WorkerHeartbeat.objects.exists(), timeout=60)
    async_task("portal.alerts.tasks.evaluate_alerts")
    wait_for(lambda: Alert.objects.filter(rule=RULE, state="ok").exists(), timeout=60)

    # The incident: the worker dies (a node lost); work keeps arriving.
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    died = timezone.now()
    job = sync.request_delta(monitored.pk, "messages", trigger="drill")

    # Minutes later nobody has evaluated the rules: the dashboard being looked at does.
    client.force_login(otto_operator)
    with time_machine.travel(timezone.now() + timedelta(minutes=3)):
        dashboard = client.get(reverse("console:dashboard"))
        assert Alert.objects.get(rule=RULE).state == "firing"
    tile = next(h for h in dashboard.context["health"] if h["name"] == "Worker")
    assert tile["state"] == "bad"
    banner = re.search(
        r'<li id="banner-worker_down">.*?<a href="([^"]+)"><strong>No worker running',
        dashboard.content.decode(),
    )
    assert banner, "the dashboard's banner names the alert"

    # Its link shows the work waiting for a worker.
    link = banner.group(1)
    assert link == str(rule(RULE).link)
    page = client.get(link)
    assert job.pk in [j.pk for j in page.context["jobs"]]

    # The fix: a worker runs again (runportal or Kubernetes starts one); it reports and works.
    graph_worker()
    async_task("portal.jobs.tasks.heartbeat")
    wait_for(lambda: WorkerHeartbeat.objects.filter(last_seen__gt=died).exists(), timeout=60)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED, timeout=60)
    async_task("portal.alerts.tasks.evaluate_alerts")  # the worker evaluates again
    wait_for(lambda: Alert.objects.get(rule=RULE).state == "ok", timeout=60)
    dashboard = client.get(reverse("console:dashboard"))
    assert "banner-worker_down" not in dashboard.content.decode()
