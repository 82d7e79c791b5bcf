"""`manage.py dead_letter`: the runbook's dead-letter calls from a shell, through the same
services as the jobs pages and the API, audited as the command's actor."""

from __future__ import annotations

import getpass
import io
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from portal.audit.models import AuditEvent
from portal.jobs.models import BulkOperation, Job
from portal.jobs.runner import enqueue
from tests.conftest import subprocess_env
from tests.portal.jobs.test_services import dead_job

pytestmark = pytest.mark.django_db

ACTOR = f"cli:{getpass.getuser()}:dead_letter"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("dead_letter", *args, stdout=out)
    return out.getvalue()


def test_list_shows_dead_jobs_newest_first_and_filters_by_type(drain):
    first = dead_job(drain, "test.permanent")
    second = dead_job(drain, "test.flaky", fail_times=1)
    enqueue("test.ok")  # pending: not in the dead-letter queue
    lines = run("list").splitlines()
    assert lines[0] == "2 dead jobs."
    assert [line.split()[0] for line in lines[1:]] == [f"#{second.pk}", f"#{first.pk}"]
    assert "test.permanent" in lines[2] and "the mailbox does not exist" in lines[2]
    only = run("list", "--type", "test.flaky").splitlines()
    assert only[0] == "1 dead job of type test.flaky." and len(only) == 2
    assert run("list", "--limit", "1").splitlines()[-1] == "… and 1 more (--limit)."


def test_retry_uses_the_service_and_is_audited_as_the_command(drain):
    job = dead_job(drain, "test.flaky", fail_times=1)
    assert run("retry", str(job.pk)).strip() == f"Job #{job.pk} (test.flaky) is pending again."
    assert drain() == ["succeeded"]
    event = AuditEvent.objects.get(action="job.retry")
    assert (event.actor_type, event.actor_name, event.target_id, event.outcome) == (
        "system",
        ACTOR,
        str(job.pk),
        "success",
    )


def test_retry_dry_run_changes_nothing(drain):
    job = dead_job(drain)
    assert "would be retried (dead)" in run("retry", str(job.pk), "--dry-run")
    job.refresh_from_db()
    assert job.status == Job.Status.DEAD
    assert not AuditEvent.objects.filter(action="job.retry").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("retry", "999"), "There is no job #999."),
        (("retry", "abc"), "A job id is a whole number, not 'abc'."),
        (("retry", "999", "--dry-run"), "There is no job #999."),
        (("list", "--type", "no.such.type"), "Unknown job type 'no.such.type'. Known types:"),
        (("retry-all", "--type", "no.such.type"), "Unknown job type 'no.such.type'."),
        (("list", "--limit", "0"), "--limit must be at least 1."),
        ((), "the following arguments are required"),
        (("purge",), "invalid choice: 'purge'"),
    ],
)
def test_bad_input_is_a_clear_error(args, message):
    with pytest.raises(CommandError, match=message.replace("(", r"\(").replace(".", r"\.")) as e:
        run(*args)
    assert e.value.returncode == 1
    assert not AuditEvent.objects.exclude(outcome="denied").exists()


def test_retrying_a_job_that_is_not_dead_says_why(drain):
    job = enqueue("test.ok")
    drain()
    with pytest.raises(CommandError, match=f"Job #{job.pk} is succeeded"):
        run("retry", str(job.pk))


def test_retry_all_starts_the_same_bulk_operation_as_the_console(drain):
    dead = [dead_job(drain, "test.permanent"), dead_job(drain, "test.permanent")]
    other = dead_job(drain, "test.flaky", fail_times=1)
    preview = run("retry-all", "--type", "test.permanent", "--dry-run")
    assert preview.splitlines()[0] == (
        "Dry run: 2 dead jobs of type test.permanent would be retried."
    )
    assert not BulkOperation.objects.exists()

    output = run("retry-all", "--type", "test.permanent")
    operation = BulkOperation.objects.get()
    assert (
        f"Retrying 2 dead jobs of type test.permanent as bulk operation #{operation.pk}" in output
    )
    assert (operation.kind, operation.total, operation.created_by) == ("retry", 2, ACTOR)
    event = AuditEvent.objects.get(action="job.retry_all")
    assert event.actor_name == ACTOR and event.params["count"] == 2
    drain(rounds=2)  # the bulk job, then the retried jobs
    runs = dict(Job.objects.values_list("pk", "runs"))
    assert (runs[dead[0].pk], runs[dead[1].pk], runs[other.pk]) == (2, 2, 1)  # other type: left


def test_retry_all_with_nothing_dead_starts_nothing():
    assert run("retry-all").strip() == "No dead jobs: nothing to retry."
    assert not BulkOperation.objects.exists()


@pytest.mark.django_db(transaction=True)  # the command runs in another process
def test_the_shell_gets_exit_codes(settings):
    def shell(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(settings.BASE_DIR / "manage.py"), "dead_letter", *args],
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    usage = shell("purge")
    assert usage.returncode == 2 and "invalid choice: 'purge'" in usage.stderr
    missing = shell("retry", "999")
    assert missing.returncode == 1 and "There is no job #999." in missing.stderr
    assert shell("list").returncode == 0
