"""The delta sync engine against the emulator: paging, replays, @removed, 410, resume."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from integrations.graph.errors import Transient
from integrations.microsoft import sync
from integrations.microsoft.models import (
    GraphCall,
    MonitoredUser,
    SyncedItem,
    SyncRun,
    SyncState,
)
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.jobs.models import Job
from tests.portal.jobs.conftest import queued_job_ids

pytestmark = pytest.mark.django_db


@pytest.fixture
def mail_state(graph_settings, monitored):
    graph_settings.SYNC_PAGE_SIZE = 5
    return sync.ensure_state(monitored.pk, "messages")


def live_ids(user, kind="messages"):
    return set(
        SyncedItem.objects.filter(
            monitored_user=user, kind=kind, removed_at__isnull=True
        ).values_list("graph_id", flat=True)
    )


def inbox_ids(emulator, user_id):
    session = emulator.session()
    token = emulator.token()
    url = f"{emulator.graph_url}/users/{user_id}/mailFolders/inbox/messages"
    ids = set()
    while url:
        page = session.get(
            url,
            headers={"Authorization": f"Bearer {token}"},
            params=None if "skiptoken" in url else {"$top": 100},
            timeout=10,
        ).json()
        ids |= {m["id"] for m in page["value"]}
        url = page.get("@odata.nextLink")
    return ids


class TestRounds:
    def test_a_first_round_is_full_and_pages_with_maxpagesize(
        self, mail_state, monitored, emulator
    ):
        run = sync.run(mail_state.pk, trigger="test")
        assert run.kind == "full" and run.outcome == "succeeded"
        expected = inbox_ids(emulator, monitored.graph_id)
        assert live_ids(monitored) == expected and len(expected) > 5
        assert run.pages >= len(expected) // 5 and run.added == len(expected)
        state = SyncState.objects.get(pk=mail_state.pk)
        assert state.delta_link and not state.next_link and state.status == "idle"
        assert state.item_count == len(expected) and state.token_obtained_at
        log = emulator.control.requests_log(path="/messages/delta")
        assert len(log) == run.pages
        assert GraphCall.objects.filter(route__endswith="/messages/delta").count() == run.pages

    def test_a_delta_round_applies_adds_updates_and_removals(
        self, mail_state, monitored, emulator, emulator_user
    ):
        sync.run(mail_state.pk)
        upn = emulator_user["userPrincipalName"]
        new = emulator.control.create_mail(upn, subject="new one")
        victim = sorted(live_ids(monitored))[0]
        emulator.control.delete_mail(upn, victim)
        changed = sorted(live_ids(monitored))[1]
        emulator.control.update_mail(upn, changed, isRead=True, subject="changed subject")
        run = sync.run(mail_state.pk)
        assert run.kind == "delta" and run.outcome == "succeeded"
        assert (run.added, run.updated, run.removed) == (1, 1, 1)
        assert new["id"] in live_ids(monitored) and victim not in live_ids(monitored)
        item = SyncedItem.objects.get(graph_id=changed)
        assert item.summary == "changed subject" and item.data["isRead"] is True
        # A round without changes changes nothing.
        quiet = sync.run(mail_state.pk)
        assert (quiet.added, quiet.updated, quiet.removed) == (0, 0, 0)

    def test_replays_are_harmless(self, mail_state, monitored, emulator, emulator_user):
        emulator.control.configure(delta={"replay_probability": 1.0})
        first = sync.run(mail_state.pk)
        count = SyncedItem.objects.count()
        emulator.control.create_mail(emulator_user["userPrincipalName"], subject="replayed")
        sync.run(mail_state.pk)
        sync.run(mail_state.pk)
        assert SyncedItem.objects.count() == count + 1
        assert live_ids(monitored) == inbox_ids(emulator, monitored.graph_id)
        assert first.added == count

    def test_applying_the_same_page_twice_is_harmless(self, mail_state):
        page = [
            {"id": "a", "subject": "A"},
            {"id": "b", "subject": "B"},
            {"id": "c", "@removed": {"reason": "deleted"}},
        ]
        assert sync.apply_page(mail_state, page) == (2, 0, 0)
        assert sync.apply_page(mail_state, page) == (0, 0, 0)
        assert sync.apply_page(mail_state, [{"id": "a", "isRead": True}]) == (0, 1, 0)
        item = SyncedItem.objects.get(graph_id="a")
        assert item.data == {"subject": "A", "isRead": True}  # partial update merged
        assert sync.apply_page(mail_state, [{"id": "a", "@removed": {}}]) == (0, 0, 1)
        assert sync.apply_page(mail_state, [{"id": "a", "@removed": {}}]) == (0, 0, 0)

    def test_chat_messages_sync_too(self, graph_settings, monitored, emulator):
        state = sync.ensure_state(monitored.pk, "chatMessages")
        run = sync.run(state.pk)
        assert run.outcome == "succeeded" and run.added > 0
        assert SyncedItem.objects.filter(kind="chatMessages").count() == run.added

    def test_a_soft_deleted_teams_message_is_marked_deleted(
        self, graph_settings, monitored, emulator
    ):
        state = sync.ensure_state(monitored.pk, "chatMessages")
        sync.run(state.pk)
        item = SyncedItem.objects.filter(kind="chatMessages", removed_at__isnull=True).first()
        chat_id = item.data.get("chatId")
        assert chat_id
        emulator.control.delete_chat_message(chat_id, item.graph_id)
        # Graph returns it as a change with deletedDateTime set, not as @removed.
        run = sync.run(state.pk)
        assert run.outcome == "succeeded" and run.removed == 1
        item.refresh_from_db()
        assert item.removed_at is not None
        # A replay of the same soft-deleted entry changes nothing.
        deleted = {
            "id": item.graph_id,
            "deletedDateTime": "2026-01-01T00:00:00Z",
            "body": {"content": ""},
        }
        assert sync.apply_page(state, [deleted]) == (0, 0, 0)


class TestRecovery:
    def test_an_expired_token_starts_an_automatic_full_resync(
        self, mail_state, monitored, emulator, emulator_user
    ):
        sync.run(mail_state.pk)
        before = live_ids(monitored)
        # A message deleted while the token is dead: only the full round's sweep sees it.
        emulator.control.expire_delta_tokens(monitored.graph_id)
        victim = sorted(before)[0]
        emulator.control.delete_mail(emulator_user["userPrincipalName"], victim, hard=True)
        run = sync.run(mail_state.pk, trigger="test")
        assert run.kind == "auto_reset" and run.outcome == "succeeded"
        reset_run = SyncRun.objects.get(outcome="reset")
        assert "SyncStateNotFound" in reset_run.error
        assert live_ids(monitored) == before - {victim}
        assert run.removed == 1
        state = SyncState.objects.get(pk=mail_state.pk)
        assert state.round_kind == "auto_reset" and state.delta_link

    def test_a_crash_mid_round_resumes_from_the_checkpoint(
        self, mail_state, monitored, emulator, graph_settings
    ):
        graph_settings.GRAPH_MAX_RETRIES = 0
        graph_settings.SYNC_PAGE_SIZE = 2
        first = sync.run(mail_state.pk, max_pages=2)  # stops after 2 pages (continuation)
        assert first.outcome == "continued" and first.pages == 2
        checkpoint = SyncState.objects.get(pk=mail_state.pk).next_link
        assert checkpoint and "skiptoken" in checkpoint.lower()
        emulator.control.inject_fault(path="/messages/delta", kind="503", count=1)
        with pytest.raises(Transient):
            sync.run(mail_state.pk)
        failed = SyncState.objects.get(pk=mail_state.pk)
        assert failed.status == "failed" and failed.next_link == checkpoint
        assert "503" in failed.last_error or "Transient" in failed.last_error
        seen = emulator.control.requests_log(path="/messages/delta")[-1]["seq"]
        resumed = sync.run(mail_state.pk)
        assert resumed.resumed and resumed.kind == "full" and resumed.outcome == "succeeded"
        assert len(emulator.control.requests_log(since=seen, path="/messages/delta")) == (
            resumed.pages
        )
        assert first.added + resumed.added == len(live_ids(monitored))
        assert live_ids(monitored) == inbox_ids(emulator, monitored.graph_id)

    def test_a_run_stops_when_its_state_is_reset_underneath(self, mail_state, monitored, emulator):
        sync.run(mail_state.pk, max_pages=1)
        # A concurrent claim is refused while the lease is held.
        sync._claim(mail_state.pk, "other", None)
        with pytest.raises(sync.SyncBusy):
            sync.run(mail_state.pk)
        sync.reset(Actor.system("test"), monitored.pk, "messages")  # clears the lease
        run = sync.run(mail_state.pk)
        assert run.kind == "manual_reset" and run.outcome == "succeeded"


class TestOperations:
    def test_delta_now_requires_sync_delta_and_is_audited(
        self, mail_state, monitored, vera_viewer, sam_support, drain
    ):
        with pytest.raises(PermissionDenied):
            sync.delta_now(
                Actor(kind="user", name="vera", role="viewer", user=vera_viewer),
                monitored.pk,
                "messages",
            )
        support = Actor(kind="user", name="sam", role="support", user=sam_support)
        job = sync.delta_now(support, monitored.pk, "messages")
        assert sync.delta_now(support, monitored.pk, "messages") == job  # coalesced
        assert AuditEvent.objects.filter(action="sync.delta", outcome="success").count() == 2
        assert AuditEvent.objects.filter(action="sync.delta", outcome="denied").count() == 1
        drain()
        job.refresh_from_db()
        assert job.status == "succeeded" and job.result["kind"] == "full"

    def test_full_and_reset_require_operator(
        self, mail_state, monitored, sam_support, otto_operator, drain
    ):
        support = Actor(kind="user", name="sam", role="support", user=sam_support)
        operator = Actor(kind="user", name="otto", role="operator", user=otto_operator)
        with pytest.raises(PermissionDenied):
            sync.full_sync(support, monitored.pk, "messages")
        with pytest.raises(PermissionDenied):
            sync.reset(support, monitored.pk, "messages")
        sync.run(mail_state.pk)
        state = sync.reset(operator, monitored.pk, "messages")
        assert not state.delta_link and state.reset_requested
        sync.full_sync(operator, monitored.pk, "messages")
        drain()
        run = SyncRun.objects.order_by("-id").first()
        assert run.kind == "full" and run.outcome == "succeeded"
        assert {e.action for e in AuditEvent.objects.filter(outcome="success")} >= {
            "sync.reset",
            "sync.full",
        }

    def test_interval_schedule_queues_one_job_per_user_and_kind_per_slot(
        self, graph_settings, monitored
    ):
        graph_settings.SYNC_SPREAD_SECONDS = 0
        assert sync.enqueue_interval_syncs() == 2
        assert sync.enqueue_interval_syncs() == 2  # same slot: the same jobs
        jobs = Job.objects.filter(job_type="graph.sync_delta")
        assert jobs.count() == 2
        assert {j.payload["trigger"] for j in jobs} == {"interval"}

    def test_the_interval_schedule_costs_a_few_statements_per_chunk_not_per_user(
        self, graph_settings
    ):
        # At 10,000 users the schedule asks for 20,000 syncs a slot, every minute: per user
        # it cost a get-or-create, a lock, a keyed enqueue and an update.
        graph_settings.SYNC_SPREAD_SECONDS = 120
        MonitoredUser.objects.bulk_create(
            MonitoredUser(identifier=f"d{n}@x.test", graph_id=f"g-d{n}") for n in range(60)
        )
        with CaptureQueriesContext(connection) as queries:
            assert sync.enqueue_interval_syncs() == 120
        assert len(queries) <= 20, "\n".join(q["sql"][:120] for q in queries)
        jobs = Job.objects.filter(job_type="graph.sync_delta")
        assert jobs.count() == 120
        states = dict(SyncState.objects.values_list("pk", "queued_job_id"))
        assert sorted(states.values()) == sorted(jobs.values_list("pk", flat=True))
        # Spread: some wait for the release sweep, the others were dispatched.
        assert {job.dispatched_at is None for job in jobs} == {True, False}
        assert all((job.next_attempt_at is None) != (job.dispatched_at is None) for job in jobs)
        with CaptureQueriesContext(connection) as queries:
            assert sync.enqueue_interval_syncs() == 120  # the same slot: the same jobs
        assert len(queries) <= 20
        assert jobs.count() == 120

    def test_interval_jobs_are_spread(self, graph_settings, monitored):
        graph_settings.SYNC_SPREAD_SECONDS = 120
        sync.enqueue_interval_syncs()
        delays = [j.next_attempt_at for j in Job.objects.filter(job_type="graph.sync_delta")]
        assert any(d is not None for d in delays)

    @pytest.mark.parametrize("delay_over", [True, False])
    def test_a_notification_runs_a_delayed_interval_job_now(
        self, graph_settings, monitored, delay_over
    ):
        # bench/end_to_end: a reply's notification was absorbed by an interval job whose
        # spread delay was over but which waited for the release sweep (19 s; up to a minute).
        graph_settings.SYNC_SPREAD_SECONDS = 120
        sync.enqueue_interval_syncs()
        delayed = Job.objects.filter(
            job_type="graph.sync_delta", next_attempt_at__gt=timezone.now()
        ).first()
        assert delayed is not None and delayed.dispatched_at is None
        if delay_over:
            Job.objects.filter(pk=delayed.pk).update(next_attempt_at=timezone.now())
        state = SyncState.objects.get(queued_job_id=delayed.pk)
        job = sync.request_delta(monitored.pk, state.kind, trigger="notification")
        delayed.refresh_from_db()
        assert job.pk == delayed.pk  # absorbed: one run sees both
        assert delayed.dispatched_at is not None and delayed.next_attempt_at is None
        assert delayed.pk in queued_job_ids()
        assert Job.objects.filter(job_type="graph.sync_delta", payload__state=state.pk).count() == 1

    def test_a_notification_leaves_a_retrys_backoff_as_it_is(self, graph_settings, monitored):
        job = sync.request_delta(monitored.pk, "messages", trigger="interval")
        backoff_until = timezone.now() + timedelta(seconds=90)
        Job.objects.filter(pk=job.pk).update(
            status=Job.Status.RETRYING, next_attempt_at=backoff_until, dispatched_at=None
        )
        assert sync.request_delta(monitored.pk, "messages", trigger="notification").pk == job.pk
        job.refresh_from_db()
        assert (job.status, job.next_attempt_at, job.dispatched_at) == (
            Job.Status.RETRYING,
            backoff_until,
            None,
        )


class TestLeaseOfAGoneWorker:
    """bench/soak: a worker SIGKILLed mid-run left its lease for 330 s; every delta job for
    that user-and-kind meanwhile failed its claim and went to the dead-letter queue."""

    @staticmethod
    def gone_pid() -> int:
        process = subprocess.Popen([sys.executable, "-c", "pass"])
        process.wait()
        return process.pid

    def test_a_lease_whose_worker_process_is_gone_is_taken_over(self, mail_state):
        dead = f"0123456789ab@{socket.gethostname()}:{self.gone_pid()}"
        assert sync._claim(mail_state.pk, dead, None)
        assert sync._claim(mail_state.pk, sync.new_lease_owner(), None)
        assert SyncState.objects.get(pk=mail_state.pk).lease_owner != dead

    def test_a_live_holder_or_one_on_another_host_keeps_its_lease(self, mail_state):
        mine = sync.new_lease_owner()  # this process: alive
        assert sync._claim(mail_state.pk, mine, None)
        assert not sync._claim(mail_state.pk, sync.new_lease_owner(), None)
        SyncState.objects.filter(pk=mail_state.pk).update(
            lease_owner=f"0123456789ab@another-node:{self.gone_pid()}"
        )
        assert not sync._claim(mail_state.pk, sync.new_lease_owner(), None)


class TestClaim:
    """The claim writes the lease and hands back the state it wrote, with its user (one
    statement on PostgreSQL): what the run reads must be what the database has."""

    @staticmethod
    def values(instance):
        return {f.attname: getattr(instance, f.attname) for f in instance._meta.concrete_fields}

    def test_the_claimed_state_and_its_user_are_the_rows_as_written(self, mail_state, monitored):
        SyncState.objects.filter(pk=mail_state.pk).update(
            delta_link="https://graph.example/delta?token=1",
            round_kind="delta",
            round_number=3,
            due_since=timezone.now(),
            token_obtained_at=timezone.now() - timedelta(days=2),
            total_added=7,
        )
        owner = sync.new_lease_owner()
        state = sync._claim(mail_state.pk, owner, None)
        assert isinstance(state, SyncState)
        fresh = SyncState.objects.select_related("monitored_user").get(pk=mail_state.pk)
        assert self.values(state) == self.values(fresh)
        assert state.lease_owner == owner and state.status == "running"
        assert self.values(state.monitored_user) == self.values(fresh.monitored_user)
        assert state.monitored_user.kinds == monitored.kinds

    def test_the_claim_gives_up_only_its_own_queued_job(self, mail_state):
        mine = sync.request_delta(mail_state.monitored_user_id, "messages", trigger="test")
        other = sync.request_delta(mail_state.monitored_user_id, "messages", trigger="test")
        assert other.pk == mine.pk  # coalesced: one waiting job
        SyncState.objects.filter(pk=mail_state.pk).update(queued_job_id=mine.pk + 1000)
        state = sync._claim(mail_state.pk, sync.new_lease_owner(), mine)
        assert state.queued_job_id == mine.pk + 1000  # someone else's: kept
        SyncState.objects.filter(pk=mail_state.pk).update(
            queued_job_id=mine.pk, lease_owner="", lease_expires_at=None
        )
        state = sync._claim(mail_state.pk, sync.new_lease_owner(), mine)
        assert state.queued_job_id is None
        assert SyncState.objects.get(pk=mail_state.pk).queued_job_id is None

    def test_a_removed_state_is_nothing_to_run(self, mail_state):
        SyncState.objects.filter(pk=mail_state.pk).delete()
        assert sync._claim(mail_state.pk, sync.new_lease_owner(), None) is None
        assert sync.run(mail_state.pk) is None
