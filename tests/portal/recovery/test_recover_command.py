"""`manage.py recover`: the recovery service's steps from the command line (portal/recovery)."""

import pytest
from django.core.management import CommandError, call_command

from integrations.microsoft import inbox, subscriptions
from integrations.microsoft.models import MonitoredUser, SyncState
from portal.audit.models import AuditEvent
from portal.jobs.models import PausedJobType
from tests.portal.recovery.support import fake_graph  # noqa: F401

pytestmark = pytest.mark.django_db


def test_the_command_lists_the_steps_without_yes(capsys):
    with pytest.raises(CommandError, match="--yes"):
        call_command("recover")
    assert "Pause processing" in capsys.readouterr().out
    assert not AuditEvent.objects.filter(action="recovery.start").exists()


def test_the_command_runs_the_same_steps(fake_graph, capsys):
    user = MonitoredUser.objects.create(identifier="d@x.test", graph_id="g")
    SyncState.objects.create(monitored_user=user, kind="messages", delta_link="https://l")
    call_command("recover", "--yes", "--reset-sync", "--timeout", "2")
    out = capsys.readouterr().out
    assert "Recovery complete and verified." in out and "reset 1 sync state" in out
    assert SyncState.objects.get().delta_link == ""
    assert not PausedJobType.objects.exists()
    start = AuditEvent.objects.get(action="recovery.start")
    assert start.actor_name.startswith("cli:")
    assert AuditEvent.objects.filter(request_id=start.target_id, action="sync.reset").exists()


def test_the_command_resumes_processing_when_a_middle_step_fails(fake_graph, stub):
    def broken(actor, *, dry_run=False):
        s = subscriptions.Summary("cleanup_webhooks")
        s.failed.append("boom")
        return s

    stub(subscriptions, "cleanup", side_effect=broken)
    with pytest.raises(CommandError, match="cleanup"):
        call_command("recover", "--yes")
    assert not PausedJobType.objects.exists() and not inbox.paused()
    finish = AuditEvent.objects.get(action="recovery.finish")
    assert finish.params["aborted"] and finish.params["drain_resumed"]
