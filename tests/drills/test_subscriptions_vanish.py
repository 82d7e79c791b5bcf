"""Drill: Graph deletes subscriptions without a lifecycle event, and recreating them fails.

Before: the counters said "active" for subscriptions Graph no longer had, nothing fired, and
after the fix Verify failed on the replaced rows, which kept green lifetime bars.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from integrations.microsoft import subscriptions, verify
from integrations.microsoft.models import Subscription, SyncRun
from portal.access.actors import Actor
from portal.jobs.models import Job
from tests.drills.conftest import alert_state, rule, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RULE = "subscription_missing"


def test_subscriptions_gone_from_graph_are_found_alerted_and_fixed(
    webhook_settings, emulator, monitored, drain, graph_worker, client, otto_operator
):
    subscriptions.setup(Actor.system("drill"))
    drain()
    originals = list(Subscription.objects.filter(state="active"))
    assert len(originals) == 2  # mail and Teams chats

    # The incident: Graph drops both, tells nobody, and refuses new ones for a while.
    for sub in originals:
        emulator.control.remove_subscription(sub.graph_id, notify=False)
    emulator.control.inject_fault(path=r"/subscriptions$", method="POST", status=403)
    graph_worker()
    subscriptions.enqueue_maintenance()  # the schedule's entry; a worker runs the job
    wait_for(lambda: Subscription.objects.missing().count() == 2, timeout=60)

    client.force_login(otto_operator)
    page = client.get(reverse("console:subscriptions")).content.decode()
    assert page.count("missing in Graph since") == 2
    assert "% of max" not in page  # no lifetime bar for what Graph does not have
    assert alert_state(RULE) == "ok"  # the portal still retries on its own

    # Past the bound (moved in this process only) the alert fires and the dashboard says so.
    with time_machine.travel(timezone.now() + timedelta(minutes=16)):
        assert alert_state(RULE) == "firing"
        dashboard = client.get(reverse("console:dashboard")).content.decode()
    assert RULE in dashboard

    # Its link is the fix: the dry run shows what Set up all would recreate.
    link = str(rule(RULE).link)
    assert link == reverse("console:subscriptions_setup")
    dry_run = client.get(link).content.decode()
    assert "would be recreated" in dry_run

    # The fix: Graph accepts subscriptions again; the operator confirms Set up all.
    emulator.control.clear_faults()
    response = client.post(link, {"confirm": "yes"})
    assert response.status_code == 302
    job = Job.objects.get(job_type="graph.subscriptions_run")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "succeeded", timeout=60)

    assert alert_state(RULE) == "ok"
    live = Subscription.objects.filter(state="active")
    assert {s.graph_id for s in live} == {s["id"] for s in emulator.control.subscriptions()}
    assert Subscription.objects.missing().count() == 0
    # The gap is caught up by delta for both resources.
    wait_for(
        lambda: (
            SyncRun.objects.filter(trigger="subscription:vanished", outcome="succeeded")
            .values("state")
            .distinct()
            .count()
            == 2
        ),
        timeout=60,
    )
    # Verify, the counters and the page agree without a clean-up.
    check = verify.check_subscriptions(None)  # this check reads the database only
    assert check.ok, check.detail
    page = client.get(reverse("console:subscriptions")).content.decode()
    assert page.count(">replaced by #") == 2 and "missing in Graph since" not in page
    assert page.count("% of max") == 2  # the two live ones only
