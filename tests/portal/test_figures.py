"""One figure, one definition: for each figure the dashboard, the Graph pages, the JSON API, the
alerts, /metrics (and the per-minute samples, verify_integration) report the same number for
the same rows, and that number follows the documented predicate.

Rows sit on the predicates' edges on purpose (no answer, 3xx vs 4xx, one hour ago, removed
users, paused endpoints), where the old copies disagreed.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import time_machine
from django.urls import reverse
from django.utils import timezone

from integrations.microsoft import verify
from integrations.microsoft.models import (
    Credential,
    GraphCall,
    MonitoredUser,
    OutboundMessage,
    Subscription,
    SyncState,
)
from portal.access.actors import Actor
from portal.alerts import rules
from portal.alerts.models import MetricSample
from portal.alerts.queue_check import check_queue
from portal.alerts.services import take_sample
from portal.events.models import Event, EventEndpoint
from portal.jobs.models import Job
from portal.lib.crypto import encrypt
from portal.runtime import registry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_settings_cache():
    registry.clear_cache()
    yield
    registry.clear_cache()


@pytest.fixture
def frozen():
    """The clock held still: ages and time-to-expiry are exact, however loaded the machine."""
    with time_machine.travel(timezone.now(), tick=False):
        yield


def verdict(name: str) -> rules.Verdict:
    return next(rule for rule in rules.RULES if rule.name == name).evaluate()


def gauge(client, name: str, labels: str = "") -> float | None:
    """One sample of /metrics (None when the family has no sample)."""
    text = client.get("/metrics", REMOTE_ADDR="127.0.0.1").content.decode()
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def page_text(client, url: str) -> str:
    """A page's text as a reader sees it: tags dropped, white space collapsed."""
    html = client.get(url).content.decode()
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def dashboard(client, persona):
    client.force_login(persona)
    response = client.get(reverse("console:dashboard"))
    assert response.status_code == 200
    return response.context


# --------------------------------------------------------------------------- Graph calls

# Documented: a call succeeded when Graph answered 2xx or 3xx; anything else (no answer, 4xx,
# 5xx, and an interim 1xx, which the old copies counted three different ways) failed.
STATUSES = [200, 201, 204, 302, None, 101, 404, 429, 500, 503]


@pytest.fixture
def calls():
    for status in STATUSES:
        GraphCall.objects.create(
            method="GET", route="/users", status=status, throttled=status == 429
        )
    # Outside the last hour: no consumer of a one-hour figure counts it.
    GraphCall.objects.create(
        method="GET", route="/users", status=500, created_at=timezone.now() - timedelta(hours=2)
    )


def test_the_success_predicate_is_the_documented_one(calls):
    recent = GraphCall.objects.last_hours(1)
    expected_ok = [s for s in STATUSES if s is not None and 200 <= s < 400]
    assert sorted(recent.succeeded().values_list("status", flat=True)) == sorted(expected_ok)
    assert recent.succeeded().count() + recent.failed().count() == len(STATUSES)
    figures = recent.figures()
    assert (figures.total, figures.succeeded, figures.failed) == (10, 4, 6)
    assert (figures.throttled, figures.server_errors, figures.no_response) == (1, 2, 1)


def test_every_consumer_reports_the_same_graph_success_rate(client, calls, vera_viewer):
    ok, total = 4, 10
    assert dashboard(client, vera_viewer)["graph"].success_rate == round(100 * ok / total, 1)
    page = client.get(reverse("console:graph_calls")).context
    assert (page["hour"].succeeded, page["hour"].total) == (ok, total)
    listed = client.get(reverse("console:graph_calls"), {"window": "1h", "status": "ok"})
    assert len(listed.context["calls"]) == ok
    api = client.get("/api/metrics/graph").json()
    assert (api["calls"], api["succeeded"], api["failed"]) == (total, ok, total - ok)
    assert api["errorRate"] == round((total - ok) / total, 4)
    # "Graph failing" counts what Graph failed (5xx) or never answered, in the alert window.
    unavailable = 3
    assert verdict("graph_error_rate").value == round(100 * unavailable / total, 2)
    assert gauge(client, "fleet_graph_unavailable_window") == unavailable
    assert gauge(client, "fleet_graph_total_window") == total
    assert gauge(client, "fleet_graph_failed_last_hour") == total - ok
    assert gauge(client, "fleet_graph_total_last_hour") == total
    take_sample()  # the rows are from the last minute: the sample holds all ten
    sample = MetricSample.objects.get()
    assert (sample.calls_ok, sample.calls_failed) == (ok, total - ok)
    day = client.get(reverse("console:graph_calls")).context["day"]
    assert (day.succeeded, day.total) == (ok, total)


def test_every_consumer_reports_the_same_429_count(client, calls, vera_viewer):
    assert dashboard(client, vera_viewer)["graph"].throttled == 1
    assert client.get("/api/metrics/graph").json()["throttled"] == 1
    assert verdict("graph_throttled").value == 1
    assert gauge(client, "fleet_graph_throttled_last_hour", '{route="/users"}') == 1
    take_sample()
    assert MetricSample.objects.get().calls_throttled == 1


# --------------------------------------------------------------------------- subscriptions


def subscription(n: int, *, state: str = "active", expires_in: timedelta | None) -> Subscription:
    return Subscription.objects.create(
        kind="messages",
        graph_id=f"sub-{n}",
        resource="users/x/messages",
        change_types="created",
        notification_url="https://portal.example/api/webhooks/mail",
        client_state_encrypted=encrypt("x"),
        state=state,
        expiration=timezone.now() + expires_in if expires_in is not None else None,
    )


def test_every_consumer_reports_the_same_expiring_subscriptions(client, vera_viewer, frozen):
    # Documented: active, and expiring less than the alert's hours away (or already lapsed).
    subscription(1, expires_in=timedelta(hours=1))
    subscription(2, expires_in=timedelta(minutes=-5))  # lapsed, still ours to act on
    subscription(3, expires_in=timedelta(hours=30))
    subscription(4, state="removed", expires_in=timedelta(hours=1))
    subscription(5, expires_in=None)
    hours = registry.get(rules.SUB_HOURS)
    assert hours == 24
    assert Subscription.objects.expiring_within(timedelta(hours=hours)).count() == 2
    assert dashboard(client, vera_viewer)["expiring"] == 2
    page = client.get(reverse("console:subscriptions"))
    assert page.context["expiring"] == 2
    listed = client.get(reverse("console:subscriptions"), {"expiring": hours})
    assert len(listed.context["rows"]) == 2
    assert verdict("subscription_expiring").value == 2
    assert gauge(client, "fleet_subscription_soonest_expiry_seconds") == -300


def test_every_consumer_reports_the_same_subscriptions_by_state(client, vera_viewer):
    subscription(1, expires_in=timedelta(hours=1))
    subscription(2, expires_in=timedelta(hours=2))
    subscription(3, state="removed", expires_in=None)
    assert Subscription.objects.counts_by_state() == {"active": 2, "removed": 1}
    client.force_login(vera_viewer)
    assert client.get(reverse("console:subscriptions")).context["counts"] == {
        "active": 2,
        "removed": 1,
    }
    assert gauge(client, "fleet_subscriptions", '{state="active"}') == 2
    assert gauge(client, "fleet_subscriptions", '{state="removed"}') == 1


def test_the_dashboard_tile_follows_the_alert_threshold(client, vera_viewer):
    subscription(1, expires_in=timedelta(hours=30))
    registry.set_value(Actor.system("tests"), rules.SUB_HOURS, 48)
    assert dashboard(client, vera_viewer)["expiring"] == 1
    page = client.get(reverse("console:subscriptions"))
    assert (page.context["expiring"], page.context["expiring_hours"]) == (1, 48)
    assert b"expiring within 48 h" in page.content
    assert verdict("subscription_expiring").value == 1


# --------------------------------------------------------------------------- the queue


@pytest.fixture
def jobs():
    counts = {"pending": 2, "retrying": 1, "running": 1, "dead": 3, "succeeded": 4, "cancelled": 1}
    back_off_over = timezone.now() - timedelta(seconds=5)
    for status, n in counts.items():
        for _ in range(n):
            Job.objects.create(
                job_type="jobs.noop",
                status=status,
                next_attempt_at=back_off_over if status == "retrying" else None,
            )


def test_every_consumer_reports_the_same_queue_length(client, jobs, vera_viewer):
    # Documented: the queue is the work due and not started (pending, and a retry whose
    # back-off is over; not running, not dead).
    assert Job.objects.queue_length() == 3
    queue = dashboard(client, vera_viewer)["queue"]
    assert queue["queueLength"] == 3 and (queue["pending"], queue["retrying"]) == (2, 1)
    assert client.get("/api/metrics/queue").json()["queueLength"] == 3
    assert verdict("queue_length").value == 3
    assert gauge(client, "fleet_queue_length") == 3
    take_sample()
    assert MetricSample.objects.get().queue_length == 3
    assert check_queue(verify._Context(timeout=1)).detail.startswith("3 due")


def test_work_waiting_for_its_time_is_not_in_the_queue(client, frozen, vera_viewer):
    """Interval syncs wait for their spread slot and retries for their back-off: neither is
    due, so neither is counted nor ages the queue (the demo at rest showed "10 jobs pending ·
    oldest 79 s" for syncs that were merely scheduled)."""
    now = timezone.now()
    for delay in (10, 40, 79):  # interval syncs in their spread slots, queued a minute ago
        Job.objects.create(
            job_type="graph.sync_delta",
            created_at=now,
            next_attempt_at=now + timedelta(seconds=delay),
        )
    Job.objects.filter(job_type="graph.sync_delta").update(created_at=now - timedelta(minutes=1))
    Job.objects.create(
        job_type="jobs.noop", status="retrying", next_attempt_at=now + timedelta(seconds=30)
    )
    assert Job.objects.queue_length() == 0 and Job.objects.oldest_due_seconds() is None
    context = dashboard(client, vera_viewer)
    assert (context["queue"]["queueLength"], context["queue"]["oldestDueSeconds"]) == (0, 0)
    body = page_text(client, reverse("console:dashboard"))
    assert "0 jobs due, not started" in body and "oldest due" not in body
    api = client.get("/api/metrics/queue").json()
    assert (api["queueLength"], api["oldestDueSeconds"], api["pending"]) == (0, 0, 3)
    assert gauge(client, "fleet_queue_length") == 0
    assert gauge(client, "fleet_oldest_due_job_seconds") == 0
    assert verdict("queue_length").value == 0

    # One slot comes due 20 s ago (released or not), one job queued 45 s ago never had to wait.
    Job.objects.filter(next_attempt_at=now + timedelta(seconds=10)).update(
        next_attempt_at=now - timedelta(seconds=20)
    )
    fresh = Job.objects.create(job_type="jobs.noop")
    Job.objects.filter(pk=fresh.pk).update(created_at=now - timedelta(seconds=45))
    assert Job.objects.queue_length() == 2 and Job.objects.oldest_due_seconds() == 45
    body = page_text(client, reverse("console:dashboard"))
    assert "2 jobs due, not started · oldest due 45 s" in body
    api = client.get("/api/metrics/queue").json()
    assert (api["queueLength"], api["oldestDueSeconds"]) == (2, 45)
    assert gauge(client, "fleet_queue_length") == 2
    assert gauge(client, "fleet_oldest_due_job_seconds") == 45
    assert verdict("queue_length").value == 2


def test_every_consumer_reports_the_same_dead_letters(client, jobs, vera_viewer):
    assert Job.objects.dead_letters() == 3
    assert dashboard(client, vera_viewer)["queue"]["dead"] == 3
    assert client.get("/api/metrics/queue").json()["dead"] == 3
    assert verdict("dead_letters").value == 3
    assert gauge(client, "fleet_dead_letters") == 3
    take_sample()
    assert MetricSample.objects.get().dead == 3
    assert check_queue(verify._Context(timeout=1)).detail.endswith("3 dead")


def test_every_consumer_reports_the_same_jobs_by_type_and_state(client, jobs):
    Job.objects.create(job_type="graph.sync_delta", status="dead")
    expected = {
        "jobs.noop": {"pending": 2, "retrying": 1, "running": 1, "dead": 3, "cancelled": 1},
        "graph.sync_delta": {"dead": 1},
    }
    assert Job.objects.active_counts_by_type() == expected
    assert client.get("/api/metrics/queue").json()["byType"] == expected
    for job_type, counts in expected.items():
        for state, n in counts.items():
            assert gauge(client, "fleet_jobs", f'{{state="{state}",type="{job_type}"}}') == n
    assert gauge(client, "fleet_jobs", '{state="succeeded",type="jobs.noop"}') is None


# --------------------------------------------------------------------------- delta sync


def test_every_consumer_reports_the_same_sync_failures_and_lag(client, vera_viewer, frozen):
    now = timezone.now()
    active = MonitoredUser.objects.create(identifier="a@example.com", upn="a@example.com")
    removed = MonitoredUser.objects.create(
        identifier="r@example.com", upn="r@example.com", is_active=False
    )
    SyncState.objects.create(
        monitored_user=active,
        kind="messages",
        status="failed",
        last_success_at=now - timedelta(hours=3),
    )
    # Failed on its first run: failing, and never synced (no success yet).
    SyncState.objects.create(monitored_user=active, kind="chatMessages", status="failed")
    # A removed user's failure is nobody's concern any more.
    SyncState.objects.create(
        monitored_user=removed,
        kind="messages",
        status="failed",
        last_success_at=now - timedelta(days=9),
    )
    health = SyncState.objects.health()
    assert (health["failed"], health["never"]) == (2, 1)
    assert health["lag_seconds"] == 3 * 3600
    assert dashboard(client, vera_viewer)["sync"]["failed"] == 2
    api = client.get("/api/metrics/sync").json()["byResourceType"]
    assert {kind: row["failed"] for kind, row in api.items()} == {
        "messages": 1,
        "chatMessages": 1,
    }
    assert api["chatMessages"]["neverSynced"] == 1 and api["messages"]["neverSynced"] == 0
    assert api["messages"]["maxLagSeconds"] == 3 * 3600
    assert gauge(client, "fleet_sync_failed", '{resource_type="messages"}') == 1
    assert gauge(client, "fleet_sync_failed", '{resource_type="chatMessages"}') == 1
    assert gauge(client, "fleet_sync_lag_seconds", '{resource_type="messages"}') == 3 * 3600


# --------------------------------------------------------------------------- the gateway


def message(status: str, **fields) -> OutboundMessage:
    return OutboundMessage.objects.create(
        channel="mail",
        status=status,
        body="x",
        idempotency_key=f"k{OutboundMessage.objects.count()}",
        **fields,
    )


def test_every_consumer_reports_the_same_failed_and_waiting_messages(client, frozen):
    now = timezone.now()
    message("failed", last_error="boom", last_error_at=now)
    message("failed", last_error="boom", last_error_at=now - timedelta(minutes=59))
    message("failed", last_error="old", last_error_at=now - timedelta(hours=2))
    message("sent", last_error="retried", last_error_at=now)  # recovered: not a failure
    message("sending", created_at=now - timedelta(minutes=40))
    message("queued", created_at=now - timedelta(minutes=10))
    message("cancelled", created_at=now - timedelta(hours=5))  # not waiting any more
    assert OutboundMessage.objects.failed_last_hour() == 2
    assert gauge(client, "fleet_messages_failed_last_hour") == 2
    # The alert judges the alert window (3 minutes): only the newest failure.
    assert OutboundMessage.objects.failed_within(180) == 1
    assert verdict("messages_failed").value == 1
    assert gauge(client, "fleet_messages_failed_window") == 1
    assert OutboundMessage.objects.oldest_unsent_seconds() == 40 * 60
    assert verdict("message_queue_stale").value == 40 * 60
    assert gauge(client, "fleet_oldest_queued_message_seconds") == 40 * 60


def test_every_consumer_reports_the_same_event_backlog(client, ada_admin):
    events = [Event.objects.create(type="mail.received", data={"n": i}) for i in range(3)]
    EventEndpoint.objects.create(
        url="https://a.example/",
        secret_encrypted="x",
        cursor=events[0].id,
        failing_since=timezone.now(),
    )
    EventEndpoint.objects.create(url="https://b.example/", secret_encrypted="x", state="paused")
    EventEndpoint.objects.create(
        url="https://c.example/", secret_encrypted="x", state="disabled", cursor=events[-1].id
    )
    # Documented: waiting for endpoints that are not paused (a pause holds its backlog on
    # purpose); failing: disabled, or active with a failing delivery.
    assert EventEndpoint.objects.backlog() == 2
    assert EventEndpoint.objects.failing().count() == 2
    assert verdict("event_backlog").value == 2
    assert verdict("event_endpoints_failing").value == 2
    assert gauge(client, "fleet_event_backlog") == 2
    assert gauge(client, "fleet_event_endpoints_failing") == 2
    client.force_login(ada_admin)
    listed = client.get(reverse("console:event_endpoints")).context["endpoints"]
    assert sum(backlog for endpoint, backlog in listed if endpoint.state != "paused") == 2


# --------------------------------------------------------------------------- the secret


def test_every_consumer_reports_the_same_secret_expiry(client, vera_viewer, frozen):
    Credential.objects.create(
        display_name="s",
        fingerprint="abc",
        state="active",
        expires_at=timezone.now() + timedelta(days=10, hours=1),
    )
    left = Credential.objects.active_expires_in()
    assert left == timedelta(days=10, hours=1)
    context = dashboard(client, vera_viewer)
    assert context["secret"]["days_left"] == 10
    # Below the alert's 14 days: the dashboard's token health warns as the alert fires.
    assert next(h for h in context["health"] if h["name"] == "Token")["state"] == "warn"
    assert verdict("secret_expiring").firing
    assert verdict("secret_expiring").value == round(left.total_seconds() / 86400, 2)
    assert gauge(client, "fleet_client_secret_expiry_seconds") == left.total_seconds()
