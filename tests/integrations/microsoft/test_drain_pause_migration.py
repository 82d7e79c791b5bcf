"""The data migration that gives the inbox drain its own pause switch, run for real: the
database is taken back to the migration before it, filled the old way, and migrated."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from integrations.microsoft import inbox
from integrations.microsoft.models import InboxDrainPause
from portal.jobs.models import Job, PausedJobType

BEFORE = [("microsoft", "0016_inbox_drain_pause"), ("jobs", "0008_workerping")]
AFTER = [("microsoft", "0017_drain_pause_from_job_type")]
LEGACY = "graph.process_notifications"


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_database(transactional_db):
    old_apps = migrate(BEFORE)
    yield old_apps
    migrate(executor_leaf_nodes())


def executor_leaf_nodes():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def test_a_paused_processing_type_becomes_the_drains_pause(old_database):
    paused_at = timezone.now() - timedelta(hours=2)
    old_paused = old_database.get_model("jobs", "PausedJobType")
    old_paused.objects.create(job_type=LEGACY, paused_by="otto", reason="storm")
    old_paused.objects.filter(job_type=LEGACY).update(paused_at=paused_at)
    old_paused.objects.create(job_type="graph.sync_delta", paused_by="otto")
    old_job = old_database.get_model("jobs", "Job")
    waiting = old_job.objects.create(job_type=LEGACY, payload={"batch": "b"}, status="pending")
    retrying = old_job.objects.create(job_type=LEGACY, payload={}, status="retrying")
    done = old_job.objects.create(job_type=LEGACY, payload={}, status="succeeded")
    other = old_job.objects.create(job_type="graph.sync_delta", payload={}, status="pending")

    migrate(AFTER)

    assert inbox.paused()
    pause = InboxDrainPause.objects.get()
    assert (pause.paused_by, pause.reason, pause.paused_at) == ("otto", "storm", paused_at)
    # The job type's pause is gone; other types' pauses stay.
    assert list(PausedJobType.objects.values_list("job_type", flat=True)) == ["graph.sync_delta"]
    status = dict(Job.objects.values_list("pk", "status"))
    assert status[waiting.pk] == status[retrying.pk] == "cancelled"
    assert (status[done.pk], status[other.pk]) == ("succeeded", "pending")

    # And back: the pause is the job type's again.
    migrate(BEFORE)
    back = old_database.get_model("jobs", "PausedJobType").objects.get(job_type=LEGACY)
    assert (back.paused_by, back.reason, back.paused_at) == ("otto", "storm", paused_at)


def test_without_a_paused_type_the_drain_runs(old_database):
    migrate(AFTER)
    assert not inbox.paused()
