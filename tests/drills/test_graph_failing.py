"""Drill: Graph answers 5xx (its own outage, not throttling).

Before: the error-rate rule counted the last hour and every failure alike (a 404 or a 429 as
much as a 503), needed 20 calls to say anything, named no page, and kept firing for an hour
after Graph had recovered.
"""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from integrations.microsoft import sync
from integrations.microsoft.models import GraphCall
from portal.jobs.models import Job
from portal.jobs.runner import release_due_jobs
from tests.drills.conftest import alert_state, rule, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RULE = "graph_error_rate"


def test_graph_5xx_fire_their_own_alert_which_clears_when_graph_recovers(
    graph_settings, emulator, monitored, graph_worker, client, otto_operator
):
    graph_settings.ALERT_WINDOW_SECONDS = 20  # the rules are evaluated here
    graph_worker()
    emulator.control.inject_fault(path=r"^/v1\.0/users/[^/]+/", kind="status", status=503)
    job = sync.request_delta(monitored.pk, "messages", trigger="drill")
    wait_for(lambda: GraphCall.objects.filter(status=503).count() >= 3, timeout=60)

    assert alert_state(RULE) == "firing"
    assert alert_state("graph_throttled") == "ok"  # not throttling: Graph is failing
    client.force_login(otto_operator)
    dashboard = client.get(reverse("console:dashboard"))
    graph_tile = next(h for h in dashboard.context["health"] if h["name"] == "Graph")
    assert graph_tile["state"] == "bad" and "5xx" in graph_tile["text"]
    banner = re.search(
        r'<li id="banner-graph_error_rate">.*?<a href="([^"]+)"><strong>Graph unreachable or '
        r"failing",
        dashboard.content.decode(),
    )
    assert banner, "the dashboard's banner names the alert"

    # Its link shows which calls fail (nothing to press: jobs retry by themselves).
    link = banner.group(1).replace("&amp;", "&")
    assert link == str(rule(RULE).link)
    page = client.get(link)
    assert page.status_code == 200
    assert page.context["calls"] and {c.status for c in page.context["calls"]} == {503}

    # Graph recovers: the job's retry succeeds and the alert clears within the window.
    emulator.control.clear_faults()

    def recovered() -> bool:
        release_due_jobs()
        return Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED

    wait_for(recovered, timeout=90, interval=0.5)
    wait_for(lambda: alert_state(RULE) == "ok", timeout=60, interval=1)
    assert (
        "banner-graph_error_rate" not in client.get(reverse("console:dashboard")).content.decode()
    )
