"""What one notification-triggered delta job costs in SQL statements (the hot path from a
change notification to its feed event), so a regression shows as a failing count."""

from __future__ import annotations

import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from integrations.microsoft import sync
from integrations.microsoft.models import SyncedItem, SyncRun, SyncState
from portal.events.models import Event
from portal.jobs import runner
from portal.jobs.models import Job, JobAttempt

pytestmark = pytest.mark.django_db(transaction=True)


def _one_delta_job(monitored, emulator, emulator_user, monkeypatch):
    state = sync.ensure_state(monitored.pk, "messages")
    sync.run(state.pk)  # the baseline round: a delta link, no events
    new = emulator.control.create_mail(emulator_user["userPrincipalName"], subject="Gate 4")
    job = sync.request_delta(monitored.pk, "messages", trigger="notification")
    # The once-a-second release sweep is amortised over many jobs; keep it out of the count.
    monkeypatch.setattr(runner, "_last_opportunistic_release", time.monotonic())
    with CaptureQueriesContext(connection) as queries:
        outcome = runner.run_job(job.pk)
    return state, job, new, outcome, queries


def test_a_delta_job_bringing_one_new_mail_stays_within_its_statement_budget(
    graph_settings, monitored, emulator, emulator_user, monkeypatch
):
    state, job, new, outcome, queries = _one_delta_job(
        monitored, emulator, emulator_user, monkeypatch
    )
    statements = [q["sql"] for q in queries.captured_queries]
    # The behaviour the count must not cost.
    assert outcome == "succeeded"
    assert Job.objects.get(pk=job.pk).status == Job.Status.SUCCEEDED
    assert JobAttempt.objects.filter(job_id=job.pk, outcome="succeeded").count() == 1
    run = SyncRun.objects.get(job_id=job.pk)
    assert (run.kind, run.outcome, run.pages, run.added) == ("delta", "succeeded", 1, 1)
    fresh = SyncState.objects.get(pk=state.pk)
    assert fresh.status == "idle" and not fresh.lease_owner and fresh.queued_job_id is None
    assert SyncedItem.objects.filter(graph_id=new["id"], removed_at__isnull=True).exists()
    assert Event.objects.get(type="mail.received").data["graphId"] == new["id"]
    # PostgreSQL 21, SQLite 27 (the claim is an UPDATE and a SELECT there, and it shows
    # BEGIN and COMMIT; its success record is not one statement): the job's claim and
    # outcome, the lease with the state and its user, the run row, the Graph call's in-flight
    # slot and log row, and one transaction for the page, its checkpoint and its event.
    budget = 22 if connection.vendor == "postgresql" else 28
    listing = "\n".join(f"{i:3} {sql[:160]}" for i, sql in enumerate(statements))
    assert len(statements) <= budget, f"{len(statements)} statements:\n{listing}"
