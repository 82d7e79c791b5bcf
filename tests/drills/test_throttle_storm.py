"""Drill: a 429 storm on one mailbox.

Before: the advised fix (real-time sync off) did not stop it, the fix that worked paused sync
for every user, and the alert kept firing for an hour after the storm because it counted the
last hour.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from integrations.microsoft import sync
from integrations.microsoft.models import GraphCall, MonitoredUser
from portal.access.actors import Actor
from portal.jobs.models import Job
from portal.jobs.runner import release_due_jobs
from portal.runtime import registry
from tests.drills.conftest import alert_state, rule, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RULE = "graph_throttled"


def test_backing_off_the_storming_mailbox_ends_the_alert_and_spares_the_others(
    graph_settings, emulator, monitored, graph_worker, client, otto_operator
):
    graph_settings.ALERT_WINDOW_SECONDS = 20  # the rules are evaluated here
    registry.set_value(Actor.system("drill"), "ALERT_THROTTLED_IN_WINDOW", 3)
    other_user = next(
        u
        for u in emulator.control.tenant()["users"]
        if u["id"] != monitored.graph_id and not u["userPrincipalName"].startswith("fleet.bot")
    )
    other = MonitoredUser.objects.create(
        identifier=other_user["userPrincipalName"],
        graph_id=other_user["id"],
        upn=other_user["userPrincipalName"],
    )
    graph_worker()
    emulator.control.inject_fault(
        path=rf"^/v1\.0/users/{re.escape(monitored.graph_id)}/", kind="429", retry_after=1
    )
    storm = sync.request_delta(monitored.pk, "messages", trigger="drill")

    def storming() -> bool:
        release_due_jobs()
        return GraphCall.objects.filter(throttled=True).count() > 3

    wait_for(storming, timeout=60, interval=0.5)
    assert alert_state(RULE) == "firing"
    client.force_login(otto_operator)
    dashboard = client.get(reverse("console:dashboard")).content.decode()
    banner = re.search(
        r'<li id="banner-graph_throttled">.*?<a href="([^"]+)"><strong>Graph throttling us',
        dashboard,
    )
    assert banner, "the dashboard's banner names the alert"
    assert f"Most on mailbox {monitored.upn}" in dashboard  # the message names the mailbox

    # Its link is the back-off form; the storming mailbox has a button that fills it in.
    link = banner.group(1)
    assert link == str(rule(RULE).link) == reverse("console:graph_calls") + "#backoff"
    page = client.get(link).content.decode()
    assert f'action="{reverse("console:mailbox_backoff")}"' in page
    assert "Back off…" in page

    # The fix: back off that mailbox for 30 minutes.
    response = client.post(
        reverse("console:mailbox_backoff"),
        {"mailbox": monitored.upn, "minutes": "30", "reason": "429 storm"},
    )
    assert response.status_code == 302
    backed_off_at = emulator.control.requests_log(path=monitored.graph_id)[-1]["seq"]
    page = client.get(reverse("console:graph_calls")).content.decode()
    assert "backed off" in page and "429 storm" in page

    # The other mailbox syncs meanwhile; the storming one's retries wait for the end.
    done = sync.request_delta(other.pk, "messages", trigger="drill")

    def other_synced() -> bool:
        release_due_jobs()
        return Job.objects.get(pk=done.pk).status == Job.Status.SUCCEEDED

    wait_for(other_synced, timeout=60, interval=0.5)
    wait_for(lambda: alert_state(RULE) == "ok", timeout=60, interval=1)

    # A retry that was already handed to a worker is put back to wait for the back-off's end
    # when the worker takes it (on a busy machine that may come after the alert cleared).
    def storm_waits() -> bool:
        release_due_jobs()
        return Job.objects.get(pk=storm.pk).status == Job.Status.RETRYING

    wait_for(storm_waits, timeout=60, interval=0.5)
    assert not emulator.control.requests_log(path=monitored.graph_id, since=backed_off_at + 1)
    dashboard = client.get(reverse("console:dashboard")).content.decode()
    assert "banner-graph_throttled" not in dashboard
