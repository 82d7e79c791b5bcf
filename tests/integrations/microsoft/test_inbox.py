"""The inbox drain: stored notifications become sync work exactly once, woken promptly."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from integrations.microsoft import inbox
from integrations.microsoft.models import (
    LifecycleEvent,
    MonitoredUser,
    NotificationInbox,
    Subscription,
    SyncState,
)
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.jobs.models import Job, PausedJobType
from portal.runtime import registry
from tests.integrations.microsoft.webhook_support import make_sub, notification, post_json

URL = "/api/webhooks/mail"


@pytest.fixture
def user(db):
    return MonitoredUser.objects.create(identifier="ida@x.test", graph_id="g-ida", upn="ida@x.test")


@pytest.fixture
def sub(user):
    return make_sub(user, graph_id="sub-1", client_state="right")


@pytest.fixture(autouse=True)
def _realtime_from_the_database():
    registry.clear_cache()
    yield
    registry.clear_cache()


def receive(client, count: int, *, start: int = 0, sub_id: str = "sub-1") -> None:
    body = {
        "value": [
            notification(sub_id, "right", message_id=f"m{n}") for n in range(start, start + count)
        ]
    }
    assert post_json(client, URL, body).status_code == 202


def sync_jobs() -> list[Job]:
    return list(Job.objects.filter(job_type="graph.sync_delta"))


@pytest.mark.django_db
class TestDrainOnce:
    def test_a_batch_becomes_one_coalesced_sync_and_is_processed_once(self, client, sub, user):
        receive(client, 5)
        assert NotificationInbox.objects.pending().count() == 5
        done = inbox.drain_once()
        assert (done.claimed, done.processed, done.targets) == (5, 5, 1)
        [job] = sync_jobs()
        state = SyncState.objects.get(monitored_user=user, kind="messages")
        assert job.payload == {"state": state.pk, "trigger": "notification"}
        rows = list(NotificationInbox.objects.all())
        assert {(r.status, r.sync_job_id) for r in rows} == {("processed", job.pk)}
        assert all(r.processed_at for r in rows)
        sub.refresh_from_db()
        assert sub.last_notification_at == rows[0].received_at
        assert inbox.drain_once().claimed == 0  # nothing is taken twice
        assert len(sync_jobs()) == 1

    def test_a_batch_over_many_users_costs_a_few_statements_not_a_few_per_user(self, client):
        # A storm spread over a fleet: one notification for each of 40 users. Each user gets
        # their own coalesced job, but the drain's statements must not grow per user (it
        # drained ~150 rows/s at 1,000 users when each cost its own ten).
        users = [
            MonitoredUser.objects.create(identifier=f"d{n}@x.test", graph_id=f"g-d{n}")
            for n in range(40)
        ]
        for n, driver in enumerate(users):
            make_sub(driver, graph_id=f"sub-d{n}", client_state="right")
            receive(client, 1, start=n, sub_id=f"sub-d{n}")
        with CaptureQueriesContext(connection) as queries:
            done = inbox.drain_once()
        assert (done.claimed, done.processed, done.targets) == (40, 40, 40)
        assert len(queries) <= 20, "\n".join(q["sql"][:120] for q in queries)
        jobs = {job.payload["state"]: job for job in sync_jobs()}
        states = SyncState.objects.filter(monitored_user__in=users, kind="messages")
        assert {state.pk: state.queued_job_id for state in states} == {
            state_id: job.pk for state_id, job in jobs.items()
        }
        for row in NotificationInbox.objects.select_related("subscription", "sync_job"):
            assert row.status == "processed"
            assert row.sync_job.payload["state"] == states.get(monitored_user=row.monitored_user).pk
            assert row.subscription.last_notification_at == row.received_at
        # The next notifications are absorbed by the jobs that wait, as cheaply.
        for n in range(40):
            receive(client, 1, start=100 + n, sub_id=f"sub-d{n}")
        with CaptureQueriesContext(connection) as queries:
            inbox.drain_once()
        assert len(queries) <= 20, "\n".join(q["sql"][:120] for q in queries)
        assert len(sync_jobs()) == 40

    def test_new_chats_of_the_tenant_wide_subscription_cost_a_few_statements_per_batch(
        self, client
    ):
        # 30 chats the drain has never seen: each needs its members job, asked in bulk.
        tenant = make_sub(None, kind="chatMessages", graph_id="sub-tenant", client_state="right")
        Subscription.objects.filter(pk=tenant.pk).update(
            resource=Subscription.TENANT_CHATS_RESOURCE
        )

        def in_each_chat(message: str) -> list[dict]:
            items = []
            for n in range(30):
                item = notification("sub-tenant", "right", message_id=f"{message}{n}")
                item["resource"] = f"chats('chat-{n}')/messages('{message}{n}')"
                items.append(item)
            return items

        assert post_json(client, URL, {"value": in_each_chat("c")}).status_code == 202
        with CaptureQueriesContext(connection) as queries:
            done = inbox.drain_once()
        assert done.claimed == 30
        assert len(queries) <= 16, "\n".join(q["sql"][:120] for q in queries)
        members_jobs = Job.objects.filter(job_type="graph.chat_members")
        assert sorted(job.payload["chat_id"] for job in members_jobs) == sorted(
            f"chat-{n}" for n in range(30)
        )
        for row in NotificationInbox.objects.select_related("sync_job"):
            assert row.status == "processed"
            assert row.sync_job.payload["chat_id"] == row.resource.split("'")[1]
        # A second message in the same chats joins the members jobs that wait.
        assert post_json(client, URL, {"value": in_each_chat("d")}).status_code == 202
        inbox.drain_once()
        assert members_jobs.count() == 30

    def test_batches_are_bounded_and_taken_oldest_first(self, client, sub):
        receive(client, 3)
        receive(client, 3, start=3)
        first = NotificationInbox.objects.order_by("id").values_list("id", flat=True)[:2]
        assert inbox.drain_once(limit=2).claimed == 2
        assert set(
            NotificationInbox.objects.filter(status="processed").values_list("id", flat=True)
        ) == set(first)
        assert inbox.drain_pending(limit=2).claimed == 4

    def test_rows_whose_subscription_went_away_are_ignored(self, client, sub):
        receive(client, 2)
        sub.delete()
        done = inbox.drain_once()
        assert (done.claimed, done.ignored, done.processed) == (2, 2, 0)
        assert set(NotificationInbox.objects.values_list("status", flat=True)) == {"ignored"}
        assert not sync_jobs()

    def test_with_realtime_sync_off_the_state_is_marked_due(self, client, sub, user):
        registry.set_value(Actor.system("test"), "ENABLE_REALTIME_SYNC", False)
        registry.clear_cache()
        receive(client, 2)
        assert inbox.drain_once().processed == 2
        assert SyncState.objects.get(monitored_user=user).due_since is not None
        assert not sync_jobs()

    def test_the_drain_has_its_own_pause_switch(self, client, sub, otto_operator):
        operator = Actor(kind="user", name="otto", role="operator", user=otto_operator)
        receive(client, 2)
        assert inbox.pause(operator, "maintenance") is True
        assert inbox.pause(operator, "again") is False
        assert inbox.drain_once().paused and NotificationInbox.objects.pending().count() == 2
        with pytest.raises(CommandError, match="paused"):
            call_command("drain_inbox", "--once")
        # Pausing the drain pauses no job type, and no job type pauses the drain.
        assert not PausedJobType.objects.exists()
        state = inbox.pause_state()
        assert (state.paused_by, state.reason) == ("otto", "maintenance")
        assert inbox.resume(operator) is True and inbox.pause_state() is None
        assert inbox.drain_once().processed == 2
        PausedJobType.objects.create(job_type="graph.sync_delta", paused_by="test")
        receive(client, 1, start=2)
        assert not inbox.drain_once().paused
        events = AuditEvent.objects.filter(target_type=inbox.PAUSE_TARGET).order_by("id")
        assert [(e.action, e.params, e.reason) for e in events] == [
            ("inbox.pause", {"already_paused": False}, "maintenance"),
            ("inbox.pause", {"already_paused": True}, "again"),
            ("inbox.resume", {"was_paused": True}, ""),
        ]

    def test_pausing_the_drain_needs_the_permission_and_a_refusal_is_audited(self, vera_viewer):
        viewer = Actor(kind="user", name="vera", role="viewer", user=vera_viewer)
        with pytest.raises(PermissionDenied):
            inbox.pause(viewer, "no")
        assert not inbox.paused()
        denied = AuditEvent.objects.get(action="inbox.pause")
        assert denied.outcome == AuditEvent.Outcome.DENIED

    def test_a_lifecycle_event_gets_one_job(self, client, sub):
        item = {"subscriptionId": "sub-1", "clientState": "right", "lifecycleEvent": "missed"}
        assert post_json(client, "/api/webhooks/lifecycle", {"value": [item]}).status_code == 202
        assert inbox.drain_once().lifecycle == 1
        event = LifecycleEvent.objects.get()
        assert event.job.payload == {"event": event.pk} and event.status == "received"
        assert inbox.drain_once().lifecycle == 0
        assert Job.objects.filter(job_type=inbox.LIFECYCLE_JOB).count() == 1

    def test_the_sweep_and_the_command_drain_everything(self, client, sub, capsys):
        receive(client, 3)
        assert inbox.sweep() == {"claimed": 3, "lifecycle": 0, "paused": 0}
        receive(client, 2, start=3)
        call_command("drain_inbox", "--once")
        assert "Drained 2 notifications (2 processed" in capsys.readouterr().out
        assert not NotificationInbox.objects.pending().exists()

    def test_backlog_counts_and_ages_what_waits(self, client, sub):
        pending = NotificationInbox.objects.pending
        assert pending().count() == 0 and NotificationInbox.objects.oldest_pending_seconds() is None
        receive(client, 4)
        first = NotificationInbox.objects.order_by("id").first()
        NotificationInbox.objects.filter(pk=first.pk).update(
            received_at=first.received_at - timedelta(minutes=20)
        )
        assert pending().count() == 4
        assert 1200 <= NotificationInbox.objects.oldest_pending_seconds() < 1300
        inbox.drain_once()
        assert NotificationInbox.objects.oldest_pending_seconds() is None


@pytest.mark.django_db(transaction=True)
class TestTheLoop:
    def run_in_thread(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()

        def target() -> None:
            try:
                inbox.run(stop.is_set)
            finally:
                connection.close()

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread, stop

    def test_it_is_woken_by_new_notifications_and_stops_when_asked(
        self, client, sub, settings, tmp_path
    ):
        settings.INBOX_DRAIN_ALIVE_FILE = str(tmp_path / "alive")
        # PostgreSQL: only the NOTIFY can wake it within the test's patience (the poll is
        # 30 s). SQLite has no NOTIFY: it polls, briefly here.
        postgres = connection.vendor == "postgresql"
        settings.INBOX_DRAIN_IDLE_SECONDS = 30 if postgres else 0.05
        with pytest.raises(CommandError, match="missing"):
            call_command("drain_inbox", "--check-alive", "60")
        thread, stop = self.run_in_thread()
        try:
            time.sleep(1.0)  # idle now, waiting
            receive(client, 3)
            deadline = time.monotonic() + 10
            while NotificationInbox.objects.pending().exists():
                assert time.monotonic() < deadline, "the drain was not woken"
                time.sleep(0.05)
            call_command("drain_inbox", "--check-alive", "60")
        finally:
            stop.set()
            # Woken by one more notification on PostgreSQL, else after its short poll.
            receive(client, 1, start=3)
            thread.join(timeout=15)
        assert not thread.is_alive()
        assert NotificationInbox.objects.filter(status="processed").count() >= 3

    def test_concurrent_drains_share_the_work_without_taking_a_row_twice(self, client, sub):
        others = [
            make_sub(
                MonitoredUser.objects.create(identifier=f"u{n}@x.test", graph_id=f"g{n}"),
                graph_id=f"sub-u{n}",
                client_state="right",
            )
            for n in range(5)
        ]
        for n in range(20):
            receive(client, 10, start=n * 10, sub_id=others[n % 5].graph_id)
        totals: list[int] = []
        errors: list[BaseException] = []

        def drain() -> None:
            try:
                totals.append(inbox.drain_pending(limit=7).claimed)
            except BaseException as exc:  # reported below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=drain) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors, errors
        assert sum(totals) == 200  # every row claimed by exactly one drain
        assert not NotificationInbox.objects.pending().exists()
        assert Subscription.objects.filter(last_notification_at__isnull=False).count() == 5
