"""The "why isn't this syncing?" report and the Graph-vs-database comparison are one service
each (integrations/microsoft/diagnosis.py), called by the console, the API and a command."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from unittest import mock

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from integrations.microsoft import diagnosis, subscriptions
from integrations.microsoft.models import MonitoredUser, SyncRun, SyncState
from portal.access.actors import Actor
from portal.access.api_tokens import create_token
from portal.audit.services import record
from tests.integrations.microsoft.webhook_support import make_sub

pytestmark = pytest.mark.django_db
UPN = "megan@fleet.example"


@pytest.fixture
def user():
    user = MonitoredUser.objects.create(
        identifier=UPN, upn=UPN, graph_id="g-megan", watch_chat_messages=False
    )
    state = SyncState.objects.create(
        monitored_user=user, kind="messages", status="failed", last_error="HTTP 403 denied"
    )
    SyncRun.objects.create(state=state, kind="delta", outcome="failed", error="HTTP 403 denied")
    record(
        "sync.reset",
        actor=Actor.system("tests"),
        target_type="sync_state",
        target_id=state.pk,
        reason="operator's note",
    )
    return user


def bearer(persona):
    token = create_token(Actor.system("tests"), persona.username, "diagnosis")[1]
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def run(*args):
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


class TestUserReport:
    def test_it_explains_and_lists_what_happened(self, user, otto_operator):
        report = diagnosis.user_report(Actor.system("tests"), user)
        texts = [finding.text for finding in report.diagnosis]
        assert any("No live messages subscription" in text for text in texts)
        assert "messages: last run failed: HTTP 403 denied" in texts
        categories = {entry.category for entry in report.entries}
        assert {"sync run", "operator"} <= categories

    def test_operators_actions_only_for_who_may_read_the_audit_log(self, user, vera_viewer):
        actor = Actor(kind="user", name=vera_viewer.username, role="viewer", user=vera_viewer)
        report = diagnosis.user_report(actor, user)
        assert "operator" not in {entry.category for entry in report.entries}

    def test_a_live_subscription_and_a_good_run_say_nothing_is_wrong(self, user):
        make_sub(user, graph_id="sub-live", expiration=timezone.now() + timedelta(days=2))
        SyncState.objects.filter(monitored_user=user).update(status="idle", last_error="")
        findings = diagnosis.diagnose(user)
        assert [f.state for f in findings] == ["succeeded"]

    def test_the_api_answers_the_same_report(self, client, user, vera_viewer):
        response = client.get(f"/api/sync/diagnosis/{UPN.upper()}", **bearer(vera_viewer))
        assert response.status_code == 200, response.content
        body = response.json()
        actor = Actor(kind="user", name=vera_viewer.username, role="viewer", user=vera_viewer)
        expected = json.loads(json.dumps(diagnosis.user_report(actor, user).as_json(), default=str))
        assert body == expected
        assert body["diagnosis"][0]["state"] == "failed"

    def test_the_api_refuses_bad_input_clearly(self, client, user, vera_viewer):
        auth = bearer(vera_viewer)
        bad = client.get(f"/api/sync/diagnosis/{UPN}?window=1y", **auth)
        assert bad.status_code == 400 and bad.json()["field"] == "window"
        assert client.get("/api/sync/diagnosis/nobody@x", **auth).status_code == 404
        assert client.get(f"/api/sync/diagnosis/{UPN}").status_code == 401

    def test_the_command_prints_it_and_fails_on_a_problem(self, user):
        with pytest.raises(CommandError) as caught:
            run("diagnose_sync", UPN)
        assert caught.value.returncode == 1
        out = io.StringIO()
        with pytest.raises(CommandError):
            call_command("diagnose_sync", "g-megan", "--json", "--window", "7d", stdout=out)
        body = json.loads(out.getvalue())
        assert body["window"] == "7d" and body["userId"] == UPN
        with pytest.raises(CommandError, match="No monitored user"):
            run("diagnose_sync", "nobody@x")

    def test_the_command_succeeds_when_all_is_well(self, user):
        make_sub(user, graph_id="sub-live", expiration=timezone.now() + timedelta(days=2))
        SyncState.objects.filter(monitored_user=user).update(status="idle", last_error="")
        assert "[ok] Nothing looks wrong" in run("diagnose_sync", UPN)


class TestCompare:
    @pytest.fixture
    def graph_side(self, monkeypatch, settings, user):
        settings.PUBLIC_BASE_URL = "https://portal.test"
        sub = make_sub(user, graph_id="graph-1", expiration=timezone.now() + timedelta(days=1))
        listed = mock.create_autospec(
            subscriptions.list_remote,
            return_value=[
                {
                    "id": "graph-1",
                    "resource": sub.resource,
                    "expirationDateTime": sub.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "notificationUrl": "https://portal.test/api/webhooks/mail",
                }
            ],
        )
        monkeypatch.setattr(subscriptions, "list_remote", listed)
        return listed

    def test_the_api_needs_the_console_permission(self, client, graph_side, vera_viewer):
        response = client.get("/api/subscriptions/compare", **bearer(vera_viewer))
        assert response.status_code == 403
        assert not graph_side.called

    def test_the_api_and_the_command_give_the_pages_verdicts(
        self, client, graph_side, otto_operator
    ):
        body = client.get("/api/subscriptions/compare", **bearer(otto_operator)).json()
        assert (body["inStep"], body["total"]) == (1, 1)
        assert body["pairs"][0]["verdict"] == "in step"
        assert "1 of 1 in step." in run("compare_webhooks")
        printed = json.loads(run("compare_webhooks", "--json"))
        assert printed["pairs"][0]["graphId"] == "graph-1"

    def test_the_command_fails_when_out_of_step(self, graph_side, user):
        make_sub(user, kind="chatMessages", graph_id="graph-gone")
        with pytest.raises(CommandError) as caught:
            run("compare_webhooks")
        assert caught.value.returncode == 1

    def test_both_are_documented_in_openapi(self, client):
        paths = client.get("/api/openapi.json").json()["paths"]
        assert (
            "Requires `view_console`" in paths["/api/sync/diagnosis/{userId}"]["get"]["description"]
        )
        compare = paths["/api/subscriptions/compare"]["get"]
        assert "Requires `setup_subscriptions`" in compare["description"]
        assert "429" in compare["responses"]
