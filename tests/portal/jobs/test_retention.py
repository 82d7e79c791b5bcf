"""The one prune: each kind of record kept for its setting's days, unhandled rows never."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.microsoft.models import (
    GraphCall,
    LifecycleEvent,
    MonitoredUser,
    NotificationInbox,
    SyncRun,
    SyncState,
    WebhookRejection,
)
from portal.alerts.models import MetricSample
from portal.api.models import IdempotencyRecord
from portal.events.models import Event, EventDelivery, EventEndpoint
from portal.jobs import retention, tasks
from portal.jobs.models import Job, WorkerHeartbeat

pytestmark = pytest.mark.django_db

keys = (f"k{n}" for n in itertools.count())


def ago(days: float):
    return timezone.now() - timedelta(days=days)


def graph_call(days: float) -> GraphCall:
    return GraphCall.objects.create(created_at=ago(days), method="GET", route="/users", status=200)


def inbox(days: float, status: str) -> NotificationInbox:
    return NotificationInbox.objects.create(
        dedupe_key=next(keys),
        batch="b",
        subscription_graph_id="s",
        kind="messages",
        change_type="created",
        resource="users/u/messages/m",
        received_at=ago(days),
        status=status,
    )


def lifecycle(days: float, status: str) -> LifecycleEvent:
    return LifecycleEvent.objects.create(
        subscription_graph_id="s",
        event="missed",
        dedupe_key=next(keys),
        received_at=ago(days),
        status=status,
    )


def sync_run(days: float, outcome: str) -> SyncRun:
    user, _ = MonitoredUser.objects.get_or_create(identifier="u@x", graph_id="u1")
    state, _ = SyncState.objects.get_or_create(monitored_user=user, kind="messages")
    return SyncRun.objects.create(state=state, kind="delta", started_at=ago(days), outcome=outcome)


def rejection(days: float) -> WebhookRejection:
    return WebhookRejection.objects.create(
        day=ago(days).date(), endpoint=next(keys), reason="unknown_subscription", count=1
    )


def sample(days: float) -> MetricSample:
    return MetricSample.objects.create(
        taken_at=ago(days), queue_length=0, dead=0, calls_ok=0, calls_failed=0, calls_throttled=0
    )


def remaining(model) -> set[int]:
    return set(model.objects.values_list("pk", flat=True))


def test_each_kind_is_kept_for_its_setting(settings):
    settings.GRAPH_CALL_RETENTION_DAYS = 3
    kept_calls = {graph_call(1).pk, graph_call(2.9).pk}
    graph_call(3.1), graph_call(40)
    kept_inbox = {inbox(1, "processed").pk, inbox(30, "pending").pk}
    inbox(8, "processed"), inbox(8, "ignored")
    kept_lifecycle = {lifecycle(2, "handled").pk, lifecycle(90, "received").pk}
    lifecycle(31, "handled"), lifecycle(31, "failed"), lifecycle(31, "ignored")
    kept_runs = {sync_run(2, "succeeded").pk, sync_run(90, "running").pk}
    sync_run(31, "failed"), sync_run(31, "succeeded")
    kept_rejections = {rejection(0).pk, rejection(89).pk}
    rejection(91)
    kept_samples = {sample(0).pk, sample(7.9).pk}  # the 7-day charts read them
    sample(8.1)

    deleted = tasks.prune_expired_records()

    assert deleted == {
        "microsoft.GraphCall": 2,
        "microsoft.NotificationInbox": 2,
        "microsoft.SyncRun": 2,
        "microsoft.LifecycleEvent": 3,
        "microsoft.WebhookRejection": 1,
        "alerts.MetricSample": 1,
        "events.Event": 0,
        "events.EventDelivery": 0,
        "jobs.Job": 0,
        "jobs.WorkerHeartbeat": 0,
        "api.IdempotencyRecord": 0,
        "microsoft.NotificationAnswers": 0,
        "microsoft.Probe": 0,
        "access.CredentialFailure": 0,
        "jobs.WorkerPing": 0,
    }
    assert remaining(GraphCall) == kept_calls
    assert remaining(NotificationInbox) == kept_inbox
    assert remaining(LifecycleEvent) == kept_lifecycle
    assert remaining(SyncRun) == kept_runs
    assert remaining(WebhookRejection) == kept_rejections
    assert remaining(MetricSample) == kept_samples
    assert tasks.prune_expired_records() == dict.fromkeys(deleted, 0)  # safe to run twice


def test_it_deletes_in_bounded_batches_and_skips_unhandled_rows():
    old = [inbox(10 + n / 10, "processed").pk for n in range(5)]
    pending = {inbox(10.05, "pending").pk, inbox(10.25, "pending").pk}
    with CaptureQueriesContext(connection) as queries:
        assert (
            retention.prune(retention.RETENTIONS["microsoft.NotificationInbox"], batch_size=2) == 5
        )
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3  # 2 + 2 + 1 rows, each in its own short transaction
    assert all("'pending'" in sql for sql in deletes)  # the DELETE repeats the condition
    assert remaining(NotificationInbox) == pending
    assert not set(old) & remaining(NotificationInbox)


def event(days: float) -> Event:
    return Event.objects.create(type="mail.received", created_at=ago(days))


def delivery(endpoint: EventEndpoint, days: float, status: str) -> EventDelivery:
    return EventDelivery.objects.create(
        endpoint=endpoint,
        webhook_id=next(keys),
        first_event_id=0,
        last_event_id=0,
        event_count=1,
        body="{}",
        status=status,
        created_at=ago(days),
    )


@pytest.mark.parametrize("state", ["active", "paused", "disabled"])
def test_events_an_endpoint_has_not_been_handed_stay_whatever_their_age(settings, state):
    settings.EVENT_RETENTION_DAYS = 30
    handed = [event(40).pk, event(35).pk]
    waiting = {event(33).pk, event(32).pk}  # after the endpoint's cursor: its backlog
    recent = event(1).pk
    lagging = EventEndpoint.objects.create(url="https://a.example/", cursor=handed[-1], state=state)
    EventEndpoint.objects.create(url="https://b.example/", cursor=recent)  # up to date
    kept = {
        delivery(lagging, 40, "pending").pk,
        delivery(lagging, 40, "held").pk,
        delivery(lagging, 1, "delivered").pk,
    }
    delivery(lagging, 31, "delivered"), delivery(lagging, 31, "failed")

    deleted = tasks.prune_expired_records()

    assert (deleted["events.Event"], deleted["events.EventDelivery"]) == (2, 2)
    assert remaining(Event) == waiting | {recent}
    assert remaining(EventDelivery) == kept
    # Once the lagging endpoint catches up (or is deleted), its old backlog may go too.
    lagging.delete()
    assert tasks.prune_expired_records()["events.Event"] == 2
    assert remaining(Event) == {recent}


def test_without_endpoints_old_events_go_after_their_days(settings):
    settings.EVENT_RETENTION_DAYS = 7
    event(8), event(9)
    kept = event(6).pk
    assert tasks.prune_expired_records()["events.Event"] == 2
    assert remaining(Event) == {kept}


def test_succeeded_jobs_go_after_their_days_and_dead_ones_stay(settings):
    settings.JOB_RETENTION_DAYS = 7

    def job(status: str, finished_days: float) -> int:
        return Job.objects.create(
            job_type="jobs.noop", status=status, finished_at=ago(finished_days)
        ).pk

    kept = {job("succeeded", 6), job("dead", 30), job("cancelled", 30)}
    old = [job("succeeded", 8), job("succeeded", 30)]
    # A job that finished long ago but was created after newer ones: walked by id, still found.
    old.append(job("succeeded", 9))

    assert retention.prune(retention.RETENTIONS["jobs.Job"], batch_size=2) == 3
    assert set(Job.objects.values_list("pk", flat=True)) == kept
    assert not Job.objects.filter(pk__in=old).exists()


def test_expired_idempotency_keys_and_gone_workers_are_pruned():
    def key(expires_in_hours: float) -> int:
        return IdempotencyRecord.objects.create(
            owner="client:1",
            endpoint="POST /api/messages",
            key=next(keys),
            fingerprint="f",
            expires_at=timezone.now() + timedelta(hours=expires_in_hours),
        ).pk

    live = {key(1), key(23)}
    key(-1), key(-48)
    WorkerHeartbeat.objects.create(worker="host:1", last_seen=ago(0.01))
    WorkerHeartbeat.objects.create(worker="host:2", last_seen=ago(2))

    deleted = tasks.prune_expired_records()

    assert deleted["api.IdempotencyRecord"] == 2
    assert set(IdempotencyRecord.objects.values_list("pk", flat=True)) == live
    assert deleted["jobs.WorkerHeartbeat"] == 1
    assert list(WorkerHeartbeat.objects.values_list("worker", flat=True)) == ["host:1"]
