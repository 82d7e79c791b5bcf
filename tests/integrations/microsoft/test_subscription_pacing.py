"""Subscription creations, renewals and deletions stay within Graph's budget for the
subscriptions API (500 per 20 s per app and tenant: "Microsoft Graph service-specific
throttling limits"), shared by every thread and process, and never go inside a Retry-After
window. Against the emulator over HTTPS, scaled down to a few requests per few seconds."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from django.db import connection

from integrations.graph import throttle
from integrations.microsoft import subscriptions
from integrations.microsoft.models import MonitoredUser, Subscription
from portal.access.actors import Actor
from portal.jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

WINDOW = 3.0
LIMIT = 4


def test_a_window_budget_allows_a_burst_then_one_as_each_leaves_the_window():
    slots = [throttle.reserve_window_slot("test-window", 3, 2.0) for _ in range(5)]
    first = slots[0]
    assert all((slot - first).total_seconds() < 0.5 for slot in slots[:3])
    margin = timedelta(seconds=2.0 + throttle.WINDOW_MARGIN_SECONDS)
    assert slots[3] >= slots[0] + margin and slots[4] >= slots[1] + margin


@pytest.fixture
def small_budget(webhook_settings, emulator, monkeypatch) -> Any:
    """Graph's budget scaled down (LIMIT per WINDOW s), and the portal's set to the same."""
    emulator.control.configure(
        throttling={"subscription_ops_limit": LIMIT, "subscription_window_s": WINDOW}
    )
    webhook_settings.GRAPH_SUBSCRIPTION_OPS_PER_20_SECONDS = LIMIT
    webhook_settings.SUBSCRIPTION_SETUP_CONCURRENCY = 4
    webhook_settings.TEAMS_TENANT_CHAT_SUBSCRIPTION_THRESHOLD = 100
    monkeypatch.setattr(subscriptions, "OPS_WINDOW_SECONDS", WINDOW)
    tenant = emulator.control.tenant()
    members = {m for chat in tenant["chats"] for m in chat["members"]}
    people = [u for u in tenant["users"] if u["id"] in members][:5]
    for u in people:
        MonitoredUser.objects.create(
            identifier=u["userPrincipalName"], graph_id=u["id"], upn=u["userPrincipalName"]
        )
    return webhook_settings


def subscription_writes(emulator) -> list[dict[str, Any]]:
    return [
        r
        for r in emulator.control.requests_log(path=r"/subscriptions")
        if r["method"] in ("POST", "PATCH", "DELETE")
    ]


def test_set_up_paces_its_creations_to_the_budget_with_no_429(small_budget, emulator):
    started = time.monotonic()
    summary = subscriptions.setup(Actor.system("test"))
    assert not summary.failed, summary.failed
    assert len(summary.created) == 10  # 5 users x (mail, chats)
    writes = subscription_writes(emulator)
    assert [r["status"] for r in writes] == [201] * 10  # not one 429
    # A burst of LIMIT, then each a window after the one LIMIT before it.
    times = sorted(r["monotonic"] for r in writes)
    for earlier, later in zip(times, times[LIMIT:], strict=False):
        assert later - earlier >= WINDOW
    # ...and not much slower than that: 10 in 2 windows and a bit.
    assert time.monotonic() - started < 2 * WINDOW + 3


def test_a_retry_after_holds_every_thread_back(small_budget, emulator):
    emulator.control.configure(throttling={"subscription_ops_limit": 500})
    emulator.control.inject_fault(
        path=r"/subscriptions$", method="POST", kind="429", retry_after=4, count=1
    )
    summary = subscriptions.setup(Actor.system("test"))
    assert not summary.failed, summary.failed
    assert Subscription.objects.filter(state="active").count() == 10
    writes = sorted(subscription_writes(emulator), key=lambda r: r["monotonic"])
    throttled = [r for r in writes if r["status"] == 429]
    assert len(throttled) == 1 and throttled[0]["retry_after"] == "4"
    after = [r for r in writes if r["monotonic"] > throttled[0]["monotonic"]]
    # Threads past their window check when the 429 came back may still arrive a moment
    # later (the check, the token and the send take some ms, more on a loaded machine); none
    # after that, for the rest of the 4 s.
    inside = [r for r in after if 1.5 < r["monotonic"] - throttled[0]["monotonic"] < 4.0]
    gaps = [(round(r["monotonic"] - throttled[0]["monotonic"], 3), r["status"]) for r in writes]
    assert inside == [], gaps


def test_one_set_up_or_maintenance_run_at_a_time(webhook_settings, emulator):
    """A run at fleet size outlasts the schedule's period: a second one must not create the
    same subscriptions again while the first still works (PostgreSQL: an advisory lock)."""
    if connection.vendor != "postgresql":
        pytest.skip("the lock is PostgreSQL's; SQLite has one writer")

    settings = connection.settings_dict
    other = psycopg.connect(
        host=settings["HOST"],
        port=settings["PORT"] or 5432,
        user=settings["USER"],
        password=settings["PASSWORD"] or None,
        dbname=settings["NAME"],
        autocommit=True,
    )
    try:
        other.execute("SELECT pg_advisory_lock(%s)", [subscriptions.RUN_LOCK_ID])
        summary = subscriptions.maintain()
        assert summary.skipped == ["another set-up or maintenance run is in progress"]
        assert not emulator.control.requests_log(path=r"/subscriptions")
        other.execute("SELECT pg_advisory_unlock(%s)", [subscriptions.RUN_LOCK_ID])
        assert subscriptions.maintain().skipped == []
    finally:
        other.close()


def test_a_mass_set_up_syncs_its_new_users_after_its_writes(small_budget, emulator):
    """More creations than one window holds: the budget sets the pace, and the baseline syncs
    wait until about the end of the run instead of taking the CPU the creations need."""
    assert not subscriptions.setup(Actor.system("test")).failed
    baselines = Job.objects.filter(
        job_type="graph.sync_delta", payload__trigger="subscription:created"
    ).order_by("pk")
    waits = [
        (job.next_attempt_at - job.created_at).total_seconds() if job.next_attempt_at else 0.0
        for job in baselines
    ]
    assert len(waits) == 10
    # The first one in the run waits for all ten writes' time (WINDOW / LIMIT each), the last
    # for one (threads finish in any order, so by size, not by row).
    assert max(waits) == pytest.approx(10 * WINDOW / LIMIT, abs=1.0)
    assert min(waits) <= WINDOW / LIMIT + 0.5
