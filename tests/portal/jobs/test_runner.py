from datetime import timedelta

import pytest
import time_machine
from django.db import OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from portal.jobs import runner
from portal.jobs.models import Job, JobAttempt, PausedJobType
from portal.jobs.registry import UnknownJobType
from portal.jobs.runner import enqueue, error_signature, release_due_jobs, run_job
from tests.portal.jobs.conftest import queued_job_ids

pytestmark = pytest.mark.django_db


class TestEnqueue:
    def test_the_job_and_its_broker_task_commit_together(self):
        job = enqueue("test.ok", {"value": 1}, created_by="tests")
        assert job.status == Job.Status.PENDING and job.dispatched_at is not None
        assert queued_job_ids() == [job.pk]

    def test_a_rolled_back_transaction_leaves_neither(self):
        with pytest.raises(RuntimeError), transaction.atomic():
            enqueue("test.ok")
            raise RuntimeError("the caller failed")
        assert not Job.objects.exists()
        assert not OrmQ.objects.exists()

    def test_the_same_idempotency_key_returns_the_same_job(self):
        first = enqueue("test.ok", idempotency_key="send:42")
        second = enqueue("test.ok", idempotency_key="send:42")
        assert first.pk == second.pk
        assert Job.objects.count() == 1 and OrmQ.objects.count() == 1

    def test_unknown_types_are_refused_at_once(self):
        with pytest.raises(UnknownJobType, match=r"test\.nope"):
            enqueue("test.nope")

    def test_a_delayed_job_waits_for_its_time(self, drain):
        job = enqueue("test.ok", delay_seconds=60)
        assert queued_job_ids() == []
        assert release_due_jobs() == 0
        with time_machine.travel(timezone.now() + timedelta(seconds=61)):
            assert release_due_jobs() == 1
        assert drain() == ["succeeded"]
        job.refresh_from_db()
        assert job.status == Job.Status.SUCCEEDED


class TestRun:
    def test_success_is_recorded_with_its_attempt_and_result(self, drain):
        job = enqueue("test.ok", {"value": "x"})
        assert drain() == ["succeeded"]
        job.refresh_from_db()
        assert (job.status, job.attempts, job.runs, job.result) == (
            Job.Status.SUCCEEDED,
            1,
            1,
            {"echo": "x"},
        )
        attempt = JobAttempt.objects.get(job=job)
        assert attempt.outcome == JobAttempt.Outcome.SUCCEEDED and attempt.duration_ms >= 0

    def test_a_handlers_record_update_commits_with_the_success(self, drain, django_user_model):
        user = django_user_model.objects.create(username="renamed", first_name="before")
        job = enqueue("test.rename_user", {"user": user.pk, "name": "after"})
        assert drain() == ["succeeded"]
        job.refresh_from_db()
        user.refresh_from_db()
        assert (job.status, job.result, user.first_name) == (
            Job.Status.SUCCEEDED,
            "renamed",
            "after",
        )

    def test_a_run_given_up_meanwhile_leaves_the_record_as_it_was(self, drain, django_user_model):
        user = django_user_model.objects.create(username="renamed", first_name="before")
        job = enqueue("test.rename_user", {"user": user.pk, "name": "after", "given_up": True})
        assert drain() == ["succeeded-late"]
        job.refresh_from_db()
        user.refresh_from_db()
        assert (job.status, user.first_name) == (Job.Status.RETRYING, "before")

    def test_running_twice_runs_once(self, drain):
        job = enqueue("test.ok")
        assert run_job(job.pk) == "succeeded"
        assert run_job(job.pk) == "not-claimable"
        assert JobAttempt.objects.filter(job=job).count() == 1

    def test_a_transient_failure_backs_off_exponentially_with_jitter(self, drain):
        job = enqueue("test.flaky", {"fail_times": 3})
        before = timezone.now()
        assert drain() == ["retrying"]
        job.refresh_from_db()
        assert job.status == Job.Status.RETRYING and job.attempts == 1
        # base 10 s, first retry: between half and all of 10 s.
        assert before + timedelta(seconds=5) <= job.next_attempt_at
        assert job.next_attempt_at <= timezone.now() + timedelta(seconds=10)
        waits = []
        for _ in range(2):
            with time_machine.travel(job.next_attempt_at + timedelta(seconds=1)):
                assert release_due_jobs() == 1
                started = timezone.now()
                drain()
            job.refresh_from_db()
            waits.append((job.next_attempt_at - started).total_seconds())
        assert 9 <= waits[0] <= 21 and 19 <= waits[1] <= 41
        with time_machine.travel(job.next_attempt_at + timedelta(seconds=1)):
            release_due_jobs()
            assert drain() == ["succeeded"]
        assert JobAttempt.objects.filter(job=job).count() == 4

    def test_a_retry_after_is_honoured(self, drain):
        job = enqueue("test.flaky", {"fail_times": 1, "retry_after": 120})
        drain()
        job.refresh_from_db()
        wait = (job.next_attempt_at - timezone.now()).total_seconds()
        assert 118 <= wait <= 132
        assert release_due_jobs() == 0

    def test_a_permanent_failure_dead_letters_at_once(self, drain):
        job = enqueue("test.permanent")
        assert drain() == ["dead"]
        job.refresh_from_db()
        assert job.status == Job.Status.DEAD and job.attempts == 1
        assert "the mailbox does not exist" in job.last_error

    def test_after_the_last_attempt_a_job_is_dead(self, drain):
        job = enqueue("test.bug")
        assert drain() == ["retrying"]
        with time_machine.travel(timezone.now() + timedelta(minutes=5)):
            release_due_jobs()
            assert drain() == ["dead"]
        job.refresh_from_db()
        assert (job.status, job.attempts, job.error_class) == (
            Job.Status.DEAD,
            2,
            "builtins.KeyError",
        )

    def test_errors_are_stored_without_secrets(self, drain):
        job = enqueue("test.bug")
        drain()
        job.refresh_from_db()
        attempt = JobAttempt.objects.get(job=job)
        for text in (job.last_error, attempt.error, attempt.traceback):
            assert "hunter2" not in text and "abcdefghijklmnop" not in text
        assert "Traceback" in attempt.traceback

    def test_the_release_sweep_with_nothing_due_reads_once(self):
        # Workers run it about once a second after their jobs: one SELECT, the paused types
        # a subquery of it (plus the transaction's own statements).
        PausedJobType.objects.create(job_type="test.ok", paused_by="tests")
        with CaptureQueriesContext(connection) as queries:
            assert release_due_jobs() == 0
        reads = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
        assert len(reads) == 1, reads

    def test_a_paused_type_waits_and_loses_nothing(self, drain):
        PausedJobType.objects.create(job_type="test.ok", paused_by="tests")
        job = enqueue("test.ok")
        # The worker that picks it up parks it instead of running it.
        assert drain() == ["paused"]
        assert release_due_jobs() == 0
        job.refresh_from_db()
        assert job.status == Job.Status.PENDING


def test_error_signatures_group_the_same_problem():
    def fail(message):
        try:
            raise ValueError(message)
        except ValueError as exc:
            return exc

    a = error_signature(fail("mailbox 1234 not found for 'ann@x'"))
    b = error_signature(fail("mailbox 99 not found for 'bob@y'"))
    c = error_signature(fail("token expired"))
    assert a == b
    assert a != c
    assert a[0] == "builtins.ValueError"


@pytest.mark.django_db(transaction=True)
def test_a_database_blip_while_recording_the_outcome_is_ridden_out(drain, monkeypatch):
    monkeypatch.setattr(runner, "RECORD_RETRIES", (0.0, 0.0))
    real = runner.record_success
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real(*args)

    monkeypatch.setattr(runner, "record_success", flaky)
    job = enqueue("test.ok")
    assert drain() == ["succeeded"]
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and calls["n"] == 2


@pytest.mark.django_db(transaction=True)
def test_a_database_blip_at_the_claim_is_ridden_out(drain, monkeypatch):
    """bench/soak: jobs whose task ran while PostgreSQL restarted failed before the claim and
    waited 15 minutes for the stale-dispatch sweep."""
    monkeypatch.setattr(runner, "RECORD_RETRIES", (0.0, 0.0))
    real = runner._claim
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("connection failed: connection to server was lost")
        return real(*args)

    monkeypatch.setattr(runner, "_claim", flaky)
    job = enqueue("test.ok")
    assert drain() == ["succeeded"]
    job.refresh_from_db()
    assert job.status == Job.Status.SUCCEEDED and job.attempts == 1 and calls["n"] == 2


@pytest.mark.django_db(transaction=True)  # follow-ups are registered when a commit happens
class TestFollowUps:
    def test_a_follow_up_runs_right_after_its_job_without_the_broker(self):
        chain = enqueue("test.chain", {"follow_up": "test.count"})
        OrmQ.objects.all().delete()  # taken by this "worker"
        assert run_job(chain.pk) == "succeeded"
        follow_up = Job.objects.get(job_type="test.count")
        assert follow_up.status == Job.Status.SUCCEEDED and follow_up.dispatched_at is None
        assert not OrmQ.objects.exists()  # never handed to the broker

    def test_outside_a_job_a_follow_up_is_dispatched_as_usual(self):
        job = enqueue("test.count", {}, follow_up=True)
        assert job.dispatched_at is not None and OrmQ.objects.count() == 1

    def test_a_follow_up_its_worker_never_ran_is_released_by_the_sweep(self):
        # The worker died between its job's commit and the follow-up: pending, undispatched.
        token = runner._follow_ups.set([])
        try:
            job = enqueue("test.count", {}, follow_up=True)
        finally:
            runner._follow_ups.reset(token)
        assert job.dispatched_at is None and not OrmQ.objects.exists()
        assert release_due_jobs() == 1 and OrmQ.objects.count() == 1

    @pytest.mark.django_db(transaction=True)
    def test_a_follow_up_queued_outside_a_transaction_is_one_insert(self):
        # The fan-out a sync job's events kick (from its commit hook): no BEGIN and COMMIT
        # of its own around the one row.
        token = runner._follow_ups.set([])
        try:
            with CaptureQueriesContext(connection) as queries:
                job = enqueue("test.count", {}, follow_up=True)
            assert runner._follow_ups.get() == [job.pk]
        finally:
            runner._follow_ups.reset(token)
        statements = [q["sql"] for q in queries.captured_queries]
        assert len(statements) == 1 and statements[0].startswith("INSERT"), statements

    def test_a_follow_up_rolled_back_with_its_transaction_is_not_run(self):
        chain = enqueue("test.chain_rolled_back", {})
        OrmQ.objects.all().delete()
        assert run_job(chain.pk) == "succeeded"
        assert not Job.objects.filter(job_type="test.count").exists()
