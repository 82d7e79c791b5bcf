"""The recovery page (console/recovery_views.py) over the recovery service."""

import pytest

from integrations.microsoft import inbox, subscriptions
from integrations.microsoft.models import MonitoredUser, SyncState
from portal.audit.models import AuditEvent
from portal.jobs.models import PausedJobType
from portal.recovery import services as recovery
from tests.portal.recovery.support import fake_graph  # noqa: F401

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("persona", ["vera_viewer", "sam_support", "otto_operator"])
def test_only_admins_run_it(client, request, persona):
    client.force_login(request.getfixturevalue(persona))
    assert client.get("/recovery/").status_code == 403
    assert client.post("/recovery/start", {"confirm": "RECOVER"}).status_code == 403


def test_starting_needs_the_typed_word(client, ada_admin):
    client.force_login(ada_admin)
    response = client.post("/recovery/start", {"confirm": "recover"})
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action="recovery.start").exists()


def test_a_guided_session_runs_each_step_in_order_as_one_audit_session(
    client, ada_admin, fake_graph
):
    user = MonitoredUser.objects.create(identifier="d@x.test", graph_id="g")
    SyncState.objects.create(monitored_user=user, kind="messages", delta_link="https://l")
    PausedJobType.objects.create(job_type="graph.lifecycle_event", paused_by="earlier")
    client.force_login(ada_admin)
    response = client.post("/recovery/start", {"confirm": "RECOVER"})
    session_id = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    page = client.get(response["Location"])
    assert [r["is_next"] for r in page.context["rows"]] == [True] + [False] * 5
    step_url = f"/recovery/{session_id}/step"
    # Out of order is refused.
    response = client.post(step_url, {"step": "setup"}, follow=True)
    assert any("The next step is" in str(m) for m in response.context["messages"])
    client.post(step_url, {"step": "pause"})
    paused = set(PausedJobType.objects.values_list("job_type", flat=True))
    assert "graph.sync_delta" in paused and inbox.paused()
    client.post(step_url, {"step": "cleanup"})
    # Reset is optional and cannot be skipped silently for others.
    response = client.post(step_url, {"step": "reset_sync", "skip": "on"}, follow=True)
    assert SyncState.objects.get().delta_link == "https://l"
    client.post(step_url, {"step": "resume"})
    # Only what this session paused is resumed.
    assert list(PausedJobType.objects.values_list("job_type", flat=True)) == [
        "graph.lifecycle_event"
    ]
    assert not inbox.paused()
    client.post(step_url, {"step": "setup"})
    client.post(step_url, {"step": "verify"})
    state = recovery.load(session_id)
    assert state.finished is not None and state.finished.outcome == "success"
    assert [k for k in recovery.STEP_KEYS if state.results[k]["ok"]] == list(recovery.STEP_KEYS)
    assert state.results["reset_sync"]["skipped"]
    # Every event the steps wrote carries the session id as its request id.
    actions = set(AuditEvent.objects.filter(request_id=session_id).values_list("action", flat=True))
    assert {
        "recovery.start",
        "recovery.step",
        "jobs.pause",
        "jobs.resume",
        "inbox.pause",
        "inbox.resume",
        "integration.verify",
        "recovery.finish",
    } <= actions
    assert {rid for _, rid in fake_graph} == {session_id}
    page = client.get(f"/recovery/{session_id}/")
    assert "finished · verified" in page.content.decode()
    response = client.post(step_url, {"step": "verify"}, follow=True)
    assert any("finished" in str(m) for m in response.context["messages"])


def test_a_failed_step_can_be_run_again(client, ada_admin, fake_graph, stub):
    def broken(actor, *, dry_run=False):
        s = subscriptions.Summary("cleanup_webhooks")
        s.failed.append("listing Graph subscriptions failed: 503")
        return s

    client.force_login(ada_admin)
    session_id = recovery.start(recovery.Actor.system("t"))
    client.post(f"/recovery/{session_id}/step", {"step": "pause"})
    stub(subscriptions, "cleanup", side_effect=broken)
    client.post(f"/recovery/{session_id}/step", {"step": "cleanup"})
    state = recovery.load(session_id)
    assert state.results["cleanup"]["ok"] is False
    assert recovery._next_runnable(state) == "cleanup"


@pytest.mark.parametrize("path", ["/recovery/nope/", "/recovery/recovery-0000000000000000/"])
def test_unknown_sessions_are_404(client, ada_admin, path):
    client.force_login(ada_admin)
    assert client.get(path).status_code == 404
    assert client.post(path + "step", {"step": "pause"}).status_code == 404
