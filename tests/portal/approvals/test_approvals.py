"""The approvals walk: for each covered action and entry point, the requester cannot
approve, another permitted person can (it runs once, as the requester), one without the
permission cannot; expiry, withdrawal, a changed preview, nobody to approve, break glass and
its alert."""

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django.utils import timezone

from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft.models import Credential, MonitoredUser, OutboundMessage, Subscription
from portal.access import bearer_tokens, service_clients
from portal.access.actors import Actor, role_of
from portal.access.models import BearerToken, ServiceClient
from portal.access.users import apply_role
from portal.alerts.models import Alert
from portal.approvals import gate, notify, services
from portal.approvals.checks import check_approval_policy
from portal.approvals.models import ApprovalRequest
from portal.approvals.services import ApprovalError
from portal.audit.models import AuditEvent
from portal.console.credentials_views import RETIRE_WORD
from portal.jobs import bulk
from portal.jobs.models import BulkOperation, Job
from portal.jobs.services import JobFilter, start_retry_all
from portal.recovery import services as recovery
from portal.recovery.services import TARGET as RECOVERY
from tests.portal.approvals.conftest import actor_of, dead_jobs

pytestmark = pytest.mark.django_db


def bearer(user) -> dict[str, str]:
    """The person's own API token (made directly: the policy covers tokens for others)."""
    _token, raw = bearer_tokens.issue(owner=user, name="walk", created_by="tests", expires_at=None)
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def api_post(client, path, user, body=None):
    return client.post(
        path, json.dumps(body or {}), content_type="application/json", **bearer(user)
    )


def file_retry_all_in_console(client, user, count=150) -> ApprovalRequest:
    client.force_login(user)
    form = client.post("/jobs/retry-all", {"status": "dead", "confirm_count": str(count)})
    assert form.status_code == 200
    page = form.content.decode()
    assert "needs a second person" in page and f"{count} item" in page
    payload = form.context["payload"]
    done = client.post("/approvals/new", {"payload": payload, "reason": "queue drained after fix"})
    approval = ApprovalRequest.objects.get()
    assert done.status_code == 302 and done["Location"] == f"/approvals/{approval.pk}/"
    return approval


# --------------------------------------------------------------------------- policy


def test_nothing_is_covered_until_an_admin_turns_it_on(otto_operator):
    dead_jobs(150)
    assert gate.policy().actions == frozenset()  # nothing saved: no policy row
    assert start_retry_all(actor_of(otto_operator), JobFilter()).total == 150
    assert not ApprovalRequest.objects.exists()


def test_the_policy_page_is_admin_only_audited_and_turns_on_the_recommended_set(
    client, ada_admin, otto_operator
):
    client.force_login(otto_operator)
    assert client.get("/approvals/policy").status_code == 403
    client.force_login(ada_admin)
    assert client.get("/approvals/policy").status_code == 200
    response = client.post("/approvals/policy", {"recommended": "yes", "bulk_threshold": "100"})
    assert response.status_code == 302
    policy = gate.policy()
    assert policy.actions == set(gate.recommended_keys()) and policy.bulk_threshold == 100
    event = AuditEvent.objects.get(action="approval.policy")
    assert event.actor_name == "ada-admin" and event.params["after"]["bulk_threshold"] == 100


@pytest.mark.parametrize("threshold", ["0", "-5", "many"])
def test_a_threshold_below_one_is_a_form_error(client, ada_admin, threshold):
    client.force_login(ada_admin)
    response = client.post("/approvals/policy", {"bulk_threshold": threshold})
    assert response.status_code == 400
    assert "at least 1" in response.content.decode() or "whole number" in response.content.decode()
    assert not AuditEvent.objects.filter(action="approval.policy").exists()


def test_the_service_refuses_an_unknown_action_and_a_bad_threshold(ada_admin):
    with pytest.raises(ApprovalError, match=r"Unknown action 'jobs\.retry_everything'"):
        services.set_policy(actor_of(ada_admin), ["jobs.retry_everything"], 100)
    with pytest.raises(ApprovalError, match="at least 1"):
        services.set_policy(actor_of(ada_admin), [], 0)


def test_an_environment_policy_naming_an_unknown_action_is_a_system_check_error():
    with override_settings(APPROVAL_REQUIRED_FOR=["jobs.retry_all", "credential.teleport"]):
        errors = check_approval_policy()
    assert [e.id for e in errors] == ["approvals.E001"]
    assert "credential.teleport" in errors[0].msg and "jobs.retry_all" in errors[0].hint


def test_the_environment_policy_replaces_the_page(client, ada_admin, otto_operator):
    with override_settings(APPROVAL_REQUIRED_FOR=["jobs.retry_all"], APPROVAL_BULK_THRESHOLD=5):
        assert gate.is_covered("jobs.retry_all", 6) and not gate.is_covered("jobs.retry_all", 5)
        with pytest.raises(ApprovalError, match="APPROVAL_REQUIRED_FOR"):
            services.set_policy(actor_of(ada_admin), [], 10)
        client.force_login(ada_admin)
        assert "in its environment" in client.get("/approvals/policy").content.decode()


# --------------------------------------------------------------------------- bulk retry


def test_console_retry_all_of_150_waits_for_a_second_operator_and_runs_once(
    client, covered, otto_operator, olga_operator, vera_viewer
):
    dead_jobs(150)
    approval = file_retry_all_in_console(client, otto_operator)
    assert approval.status == "pending" and approval.requester_name == "otto-operator"
    assert approval.preview == {"jobs matching": 150}
    assert approval.params == {"filter": {"status": "dead"}}
    assert Job.objects.filter(status="dead").count() == 150 and not BulkOperation.objects.exists()

    # The requester cannot approve: another session, or their API token.
    response = client.post(f"/approvals/{approval.pk}/approve", follow=True)
    assert "someone else must decide it" in response.content.decode()
    response = api_post(client, f"/api/approvals/{approval.pk}/approve", otto_operator)
    assert response.status_code == 403 and response.json()["error"] == "own_request"
    # A viewer does not hold retry_all_jobs.
    client.force_login(vera_viewer)
    client.post(f"/approvals/{approval.pk}/approve")
    assert ApprovalRequest.objects.get().status == "pending"
    assert AuditEvent.objects.filter(
        action="approval.approve", outcome="denied", actor_name="vera-viewer"
    ).exists()

    client.force_login(olga_operator)
    response = client.post(f"/approvals/{approval.pk}/approve", {"comment": "ok, fix is out"})
    assert response.status_code == 302
    approval.refresh_from_db()
    assert approval.status == "executed" and approval.decided_by_name == "olga-operator"
    operation = BulkOperation.objects.get()
    assert operation.total == 150 and operation.created_by == "otto-operator"
    bulk.process(operation.pk)
    assert Job.objects.filter(status="pending", retried_by="otto-operator").count() == 150

    # Both names in the audit log: the approval by olga, the run and the retry by otto.
    approve = AuditEvent.objects.get(action="approval.approve", outcome="success")
    run = AuditEvent.objects.get(action="approval.run")
    retry = AuditEvent.objects.get(action="job.retry_all")
    assert approve.actor_name == "olga-operator"
    assert run.actor_name == "otto-operator" and run.params["approved_by"] == "olga-operator"
    assert retry.actor_name == "otto-operator" and retry.request_id == f"approval-{approval.pk}"

    # Exactly once: a second approval is a 409 that says why.
    response = api_post(client, f"/api/approvals/{approval.pk}/approve", olga_operator)
    assert response.status_code == 409 and "already ran" in response.json()["detail"]
    assert BulkOperation.objects.count() == 1


def test_api_retry_all_answers_202_with_the_request_and_approval_runs_it(
    client, covered, otto_operator, olga_operator
):
    dead_jobs(150)
    response = api_post(client, "/api/queue/retry-all", otto_operator)
    assert response.status_code == 400 and response.json()["field"] == "reason"
    response = api_post(client, "/api/queue/retry-all", otto_operator, {"reason": "fixed"})
    assert response.status_code == 202
    body = response.json()["approvalRequest"]
    assert body["status"] == "pending" and body["preview"] == {"jobs matching": 150}
    listed = client.get("/api/approvals", **bearer(olga_operator)).json()
    assert listed["pending"] == 1 and listed["approvals"][0]["id"] == body["id"]
    response = api_post(client, f"/api/approvals/{body['id']}/approve", olga_operator)
    assert response.status_code == 200
    assert response.json()["approvalRequest"]["status"] == "executed"
    assert BulkOperation.objects.get().total == 150


def test_at_or_below_the_threshold_nothing_waits(client, covered, otto_operator):
    dead_jobs(100)
    response = api_post(client, "/api/queue/retry-all", otto_operator)
    assert response.status_code == 202 and response.json()["count"] == 100
    assert not ApprovalRequest.objects.exists()


def test_expiry_and_withdrawal_answer_409_with_why(client, covered, otto_operator, olga_operator):
    dead_jobs(150)
    first = services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "a", "api"
    )
    ApprovalRequest.objects.filter(pk=first.pk).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    response = api_post(client, f"/api/approvals/{first.pk}/approve", olga_operator)
    assert response.status_code == 409 and "expired" in response.json()["detail"]
    assert ApprovalRequest.objects.get(pk=first.pk).status == "expired"

    second = services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "b", "api"
    )
    # Only the requester withdraws.
    response = api_post(client, f"/api/approvals/{second.pk}/withdraw", olga_operator)
    assert response.status_code == 403
    response = api_post(client, f"/api/approvals/{second.pk}/withdraw", otto_operator)
    assert response.status_code == 200
    response = api_post(client, f"/api/approvals/{second.pk}/approve", olga_operator)
    assert response.status_code == 409 and "withdrew" in response.json()["detail"]
    response = api_post(
        client, f"/api/approvals/{second.pk}/reject", olga_operator, {"comment": "x"}
    )
    assert response.status_code == 409
    assert not BulkOperation.objects.exists()


def test_rejection_needs_a_comment_and_stops_the_request(
    client, covered, otto_operator, olga_operator
):
    dead_jobs(150)
    approval = services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "why", "api"
    )
    response = api_post(client, f"/api/approvals/{approval.pk}/reject", olga_operator)
    assert response.status_code == 400 and response.json()["field"] == "comment"
    response = api_post(
        client, f"/api/approvals/{approval.pk}/reject", olga_operator, {"comment": "not yet"}
    )
    assert response.json()["approvalRequest"]["status"] == "rejected"
    assert AuditEvent.objects.get(action="approval.reject").reason == "not yet"


def test_ten_times_more_dead_jobs_shows_the_difference_before_approval(
    client, covered, otto_operator, olga_operator
):
    dead_jobs(150)
    approval = services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "why", "api"
    )
    dead_jobs(1350)
    response = api_post(client, f"/api/approvals/{approval.pk}/approve", olga_operator)
    assert response.status_code == 409 and response.json()["error"] == "preview_changed"
    assert response.json()["difference"] == ["jobs matching: 150 when requested, 1500 now"]
    client.force_login(olga_operator)
    page = client.get(f"/approvals/{approval.pk}/").content.decode()
    assert "Changed since the request" in page and "1500 now" in page
    response = api_post(
        client,
        f"/api/approvals/{approval.pk}/approve",
        olga_operator,
        {"acknowledgeChanges": True},
    )
    assert response.status_code == 200 and BulkOperation.objects.get().total == 1500


def test_the_requester_is_checked_again_when_it_runs(client, covered, otto_operator, olga_operator):
    dead_jobs(150)
    approval = services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "why", "api"
    )
    apply_role(otto_operator, "support")
    response = api_post(client, f"/api/approvals/{approval.pk}/approve", olga_operator)
    body = response.json()["approvalRequest"]
    assert body["status"] == "failed" and "may no longer do this" in body["error"]
    assert not BulkOperation.objects.exists()


def test_a_service_client_never_approves(client, covered, otto_operator):
    dead_jobs(150)
    approval = services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "why", "api"
    )
    _row, raw = service_clients.create_client(Actor.system("tests"), "bot", ["events:read"])
    response = client.post(
        f"/api/approvals/{approval.pk}/approve", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    assert response.status_code == 403
    assert ApprovalRequest.objects.get().status == "pending"


def test_the_django_admin_cannot_approve_ones_own_request(client, covered, ada_admin, abe_admin):
    dead_jobs(150)
    approval = services.request_approval(
        actor_of(ada_admin), "jobs.retry_all", {"filter": {"status": "dead"}}, "why", "console"
    )
    client.force_login(ada_admin)
    changelist = "/admin/approvals/approvalrequest/"
    data = {"action": "approve_selected", "_selected_action": [approval.pk]}
    response = client.post(changelist, data, follow=True)
    assert "someone else must decide it" in response.content.decode()
    assert ApprovalRequest.objects.get().status == "pending"
    client.force_login(abe_admin)
    client.post(changelist, data, follow=True)
    assert ApprovalRequest.objects.get().status == "executed"
    assert BulkOperation.objects.get().created_by == "ada-admin"


def test_pending_requests_are_a_nav_badge_and_a_metrics_gauge(client, covered, otto_operator):
    dead_jobs(150)
    services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "why", "api"
    )
    client.force_login(otto_operator)
    groups = client.get("/approvals/").context["nav_groups"]
    work = next(g for g in groups if any(i["label"] == "Approvals" for i in g["items"]))
    assert work["badge"] == 1
    assert next(i for i in work["items"] if i["label"] == "Approvals")["badge"] == 1
    metrics = client.get("/metrics").content.decode()
    assert "fleet_approvals_pending 1.0" in metrics


# --------------------------------------------------------------------------- bulk renew


def test_bulk_renew_above_the_threshold_needs_approval(
    client, ada_admin, otto_operator, olga_operator
):
    services.set_policy(actor_of(ada_admin), ["subscriptions.bulk_renew"], 2)
    user = MonitoredUser.objects.create(identifier="u1", upn="u1@example.com")
    soon = timezone.now() + timedelta(hours=1)
    for n in range(3):
        Subscription.objects.create(
            monitored_user=user, graph_id=f"g{n}", state="active", expiration=soon, resource=f"r{n}"
        )
    client.force_login(otto_operator)
    form = client.post("/subscriptions/renew-expiring", {"hours": "24", "confirm_count": "3"})
    assert form.status_code == 200 and "needs a second person" in form.content.decode()
    client.post("/approvals/new", {"payload": form.context["payload"], "reason": "expiring"})
    approval = ApprovalRequest.objects.get()
    assert approval.action == "subscriptions.bulk_renew"
    assert approval.preview == {"subscriptions expiring": 3}
    services.approve(actor_of(olga_operator), approval.pk)
    operation = BulkOperation.objects.get()
    assert operation.kind == "renew_subscriptions" and operation.total == 3
    assert operation.created_by == "otto-operator"


# --------------------------------------------------------------------------- recovery


def test_recovery_with_no_other_admin_is_refused_at_once_pointing_to_break_glass(
    client, covered, ada_admin
):
    client.force_login(ada_admin)
    form = client.post("/recovery/start", {"confirm": "RECOVER"})
    assert form.status_code == 200 and "Break glass" in form.content.decode()
    response = client.post(
        "/approvals/new", {"payload": form.context["payload"], "reason": "outage"}
    )
    assert response.status_code == 409
    assert "Nobody else may approve" in response.content.decode()
    assert not ApprovalRequest.objects.exists()


def test_break_glass_runs_at_once_alerts_and_stays_marked_until_another_admin_reviews(
    client, covered, ada_admin, abe_admin, otto_operator, django_capture_on_commit_callbacks
):
    client.force_login(ada_admin)
    form = client.post("/recovery/start", {"confirm": "RECOVER"})
    payload = form.context["payload"]
    response = client.post("/approvals/new", {"payload": payload, "mode": "break_glass"})
    assert response.status_code == 400 and "Give a reason" in response.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/approvals/new",
            {"payload": payload, "mode": "break_glass", "reason": "Graph down, alone"},
        )
    approval = ApprovalRequest.objects.get()
    assert approval.break_glass and approval.status == "executed"
    session_id = approval.result["session_id"]
    assert AuditEvent.objects.filter(
        action="recovery.start", target_type=RECOVERY, target_id=session_id
    ).exists()
    event = AuditEvent.objects.get(action="approval.break_glass")
    assert event.actor_name == "ada-admin" and event.reason == "Graph down, alone"
    alert = Alert.objects.get(rule="approval_break_glass")
    assert alert.state == "firing"
    dashboard = client.get("/").content.decode()
    assert "Approval bypassed" in dashboard or "approval_break_glass" in dashboard

    # An operator may not break glass; the admin who broke it does not review it.
    with pytest.raises(PermissionDenied):
        services.break_glass(actor_of(otto_operator), "recovery.start", {}, "x", "api")
    with pytest.raises(ApprovalError, match="another admin reviews"):
        services.review_break_glass(actor_of(ada_admin), approval.pk, "fine")
    client.force_login(abe_admin)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/approvals/{approval.pk}/review", {"comment": "checked the session"})
    approval.refresh_from_db()
    assert approval.reviewed_by_name == "abe-admin"
    assert AuditEvent.objects.get(action="approval.review").actor_name == "abe-admin"
    assert Alert.objects.get(rule="approval_break_glass").state == "ok"


def test_recovery_approved_by_another_admin_opens_the_session_as_the_requester(
    client, covered, ada_admin, abe_admin
):
    client.force_login(ada_admin)
    form = client.post("/recovery/start", {"confirm": "RECOVER", "reset_sync": "on"})
    client.post("/approvals/new", {"payload": form.context["payload"], "reason": "stuck"})
    approval = ApprovalRequest.objects.get()
    assert approval.params == {"reset_sync": True}
    services.approve(actor_of(abe_admin), approval.pk)
    approval.refresh_from_db()
    state = recovery.load(approval.result["session_id"])
    assert state.exists and state.reset_sync
    start = AuditEvent.objects.get(action="recovery.start")
    assert start.actor_name == "ada-admin"


# --------------------------------------------------------------------------- credentials


@pytest.mark.parametrize("action", ["activate", "retire"])
def test_credential_actions_wait_for_another_admin(client, covered, ada_admin, abe_admin, action):
    credential = Credential.objects.create(
        display_name="next",
        fingerprint="0a1b2c3d",
        state="pending",
        last_verified_at=timezone.now(),
    )
    client.force_login(ada_admin)
    form = client.post(f"/credentials/{credential.pk}/{action}", {"confirm": RETIRE_WORD})
    assert form.status_code == 200 and "needs a second person" in form.content.decode()
    client.post("/approvals/new", {"payload": form.context["payload"], "reason": "rotation"})
    approval = ApprovalRequest.objects.get()
    assert approval.action == f"credential.{action}"
    assert Credential.objects.get().state == "pending"
    with pytest.raises(ApprovalError, match="someone else"):
        services.approve(actor_of(ada_admin), approval.pk)
    services.approve(actor_of(abe_admin), approval.pk)
    expected = {"activate": "active", "retire": "retired"}[action]
    assert Credential.objects.get().state == expected
    assert AuditEvent.objects.get(action=f"credential.{action}").actor_name == "ada-admin"


def test_credential_rollback_through_the_api_answers_202(client, covered, ada_admin, abe_admin):
    response = api_post(
        client,
        "/api/approvals",
        ada_admin,
        {"action": "credential.rollback", "reason": "bad secret"},
    )
    assert response.status_code == 202
    body = response.json()["approvalRequest"]
    assert body["action"] == "credential.rollback" and body["status"] == "pending"
    response = api_post(client, f"/api/approvals/{body['id']}/approve", abe_admin)
    # Nothing to roll back to: it ran, once, and failed with the service's reason.
    approval = response.json()["approvalRequest"]
    assert approval["status"] == "failed" and "grace period" in approval["error"]


def test_bad_api_requests_are_clear_4xx(client, covered, otto_operator):
    response = api_post(client, "/api/approvals", otto_operator, {"action": "nope", "reason": "x"})
    assert response.status_code == 400 and "Unknown action" in response.json()["detail"]
    response = api_post(
        client,
        "/api/approvals",
        otto_operator,
        {"action": "jobs.retry_all", "reason": "x", "params": {"filter": 3}},
    )
    assert response.status_code == 400 and response.json()["field"] == "params"
    response = api_post(client, "/api/approvals/999/approve", otto_operator)
    assert response.status_code == 404


def test_a_tampered_request_form_is_refused(client, covered, otto_operator):
    client.force_login(otto_operator)
    response = client.post("/approvals/new", {"payload": "forged", "reason": "x"}, follow=True)
    assert "altered" in response.content.decode()
    assert not ApprovalRequest.objects.exists()


# --------------------------------------------------------------------------- commands


def test_a_covered_command_refuses_without_request_or_approval(covered, otto_operator):
    dead_jobs(150)
    with pytest.raises(CommandError, match="needs a second person"):
        call_command("dead_letter", "retry-all")


def test_dead_letter_retry_all_files_a_request_and_runs_it_once_approved(
    covered, otto_operator, olga_operator
):
    dead_jobs(150)
    with pytest.raises(CommandError, match="reason"):
        call_command("dead_letter", "retry-all", "--request")
    out = StringIO()
    call_command("dead_letter", "retry-all", "--request", "--reason", "fixed", stdout=out)
    approval = ApprovalRequest.objects.get()
    assert f"Approval request #{approval.pk} filed" in out.getvalue()
    assert approval.entry_point == "command" and approval.requester_name.startswith("cli:")
    with pytest.raises(CommandError, match="waits for a second person"):
        call_command("dead_letter", "retry-all", "--approval", str(approval.pk))
    services.approve(actor_of(olga_operator), approval.pk, "go")
    assert ApprovalRequest.objects.get().status == "approved" and not BulkOperation.objects.exists()
    out = StringIO()
    call_command("dead_letter", "retry-all", "--approval", str(approval.pk), stdout=out)
    assert BulkOperation.objects.get().total == 150 and "Retrying 150" in out.getvalue()
    assert ApprovalRequest.objects.get().status == "executed"
    run = AuditEvent.objects.get(action="approval.run")
    assert run.params["approved_by"] == "olga-operator"
    with pytest.raises(CommandError, match="already ran"):
        call_command("dead_letter", "retry-all", "--approval", str(approval.pk))
    assert BulkOperation.objects.count() == 1


def test_an_approval_runs_only_the_parameters_approved(covered, otto_operator, olga_operator):
    dead_jobs(150)
    call_command("dead_letter", "retry-all", "--request", "--reason", "r", stdout=None)
    approval = ApprovalRequest.objects.get()
    services.approve(actor_of(olga_operator), approval.pk)
    with pytest.raises(CommandError, match="failed"):
        call_command(
            "dead_letter", "retry-all", "--type", "jobs.noop", "--approval", str(approval.pk)
        )
    assert not BulkOperation.objects.exists()


def test_rotate_client_secret_retire_goes_through_approval(covered, ada_admin, abe_admin):
    credential = Credential.objects.create(display_name="old", fingerprint="ab12", state="pending")
    with pytest.raises(CommandError, match="needs a second person"):
        call_command("rotate_client_secret", "--retire", str(credential.pk))
    call_command(
        "rotate_client_secret", "--retire", str(credential.pk), "--request", "--reason", "leaked"
    )
    approval = ApprovalRequest.objects.get()
    services.approve(actor_of(abe_admin), approval.pk)
    call_command(
        "rotate_client_secret", "--retire", str(credential.pk), "--approval", str(approval.pk)
    )
    assert Credential.objects.get().state == "retired"


def test_recover_refuses_without_request_or_approval(covered):
    with pytest.raises(CommandError, match="needs a second person"):
        call_command("recover", "--yes")


# ----------------------------------------------------------------- people, tokens, clients


def test_giving_someone_the_admin_role_waits_for_another_admin(
    client, covered, ada_admin, abe_admin, otto_operator
):
    client.force_login(ada_admin)
    form = client.post(f"/people/{otto_operator.username}/role", {"role": "admin"})
    assert form.status_code == 200 and "needs a second person" in form.content.decode()
    client.post("/approvals/new", {"payload": form.context["payload"], "reason": "new on-call"})
    approval = ApprovalRequest.objects.get()
    assert approval.preview == {"current role": "operator"}
    with pytest.raises(ApprovalError, match="someone else"):
        services.approve(actor_of(ada_admin), approval.pk)
    services.approve(actor_of(abe_admin), approval.pk)
    assert role_of(get_user_model().objects.get(pk=otto_operator.pk)) == "admin"
    assert AuditEvent.objects.get(action="user.set_role").actor_name == "ada-admin"
    # Other roles are not covered.
    client.post(f"/people/{otto_operator.username}/role", {"role": "support"})
    assert ApprovalRequest.objects.count() == 1


def test_a_token_for_another_person_is_shown_once_to_the_requester_only(
    client, covered, ada_admin, abe_admin, otto_operator
):
    client.force_login(ada_admin)
    data = {"user": otto_operator.username, "name": "otto scripts", "expires_days": "30"}
    form = client.post("/tokens/create", data)
    assert form.status_code == 200 and "needs a second person" in form.content.decode()
    client.post("/approvals/new", {"payload": form.context["payload"], "reason": "scripts"})
    approval = ApprovalRequest.objects.get()
    assert not BearerToken.objects.filter(user=otto_operator).exists()
    services.approve(actor_of(abe_admin), approval.pk)
    approval.refresh_from_db()
    assert approval.status == "executed" and "token_id" in approval.result
    assert "_secret" not in json.dumps(approval.result)
    run = AuditEvent.objects.get(action="approval.run")
    assert approval.secret_encrypted and approval.secret_encrypted not in json.dumps(run.params)
    # The approver does not see it; the requester sees it once.
    with pytest.raises(ApprovalError, match="Only the requester"):
        services.reveal_secret(actor_of(abe_admin), approval.pk)
    page = client.post(f"/approvals/{approval.pk}/reveal").content.decode()
    token = BearerToken.objects.get(user=otto_operator)
    secret = page.split('id="revealed-secret">')[1].split("<")[0]
    assert secret.startswith(token.prefix)
    response = api_post(client, f"/api/approvals/{approval.pk}/secret", ada_admin)
    assert response.status_code == 409
    # One's own token needs nobody.
    client.post("/tokens/create", {**data, "user": ada_admin.username})
    assert (
        ApprovalRequest.objects.count() == 1 and BearerToken.objects.filter(user=ada_admin).exists()
    )


def test_a_service_client_that_may_send_waits_for_another_admin(
    client, covered, ada_admin, abe_admin
):
    client.force_login(ada_admin)
    data = {"name": "fleet-api", "scopes": ["messages:send"], "expires_days": "90"}
    form = client.post("/clients/create", data)
    assert form.status_code == 200 and "needs a second person" in form.content.decode()
    client.post("/approvals/new", {"payload": form.context["payload"], "reason": "fleet api"})
    approval = ApprovalRequest.objects.get()
    services.approve(actor_of(abe_admin), approval.pk)
    assert ServiceClient.objects.get().name == "fleet-api"
    response = api_post(client, f"/api/approvals/{approval.pk}/secret", ada_admin)
    assert response.status_code == 200 and response.json()["secret"]
    # Reading events only is not covered.
    client.post("/clients/create", {**data, "name": "reader", "scopes": ["events:read"]})
    assert ServiceClient.objects.filter(name="reader").exists()


def test_portal_user_set_role_admin_through_the_command(covered, otto_operator, abe_admin):
    with pytest.raises(CommandError, match="needs a second person"):
        call_command("portal_user", "set-role", otto_operator.username, "admin")
    call_command(
        "portal_user", "set-role", otto_operator.username, "admin", "--request", "--reason", "r"
    )
    approval = ApprovalRequest.objects.get()
    services.approve(actor_of(abe_admin), approval.pk)
    call_command(
        "portal_user", "set-role", otto_operator.username, "admin", "--approval", str(approval.pk)
    )
    assert role_of(get_user_model().objects.get(pk=otto_operator.pk)) == "admin"


# --------------------------------------------------------------------------- connect a tenant


@pytest.fixture(scope="module")
def other_tenant(tmp_path_factory):
    with RunningEmulator(
        state_dir=tmp_path_factory.mktemp("other-tenant"), extra_args=["--seed", "7"]
    ) as emu:
        yield emu


def connect_form(emu) -> dict[str, str]:
    return {
        "tenant_id": emu.tenant_id,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
        "authority_host": emu.authority_host,
        "graph_url": emu.graph_url,
        "ca_bundle": emu.ca_path,
    }


def test_connecting_a_tenant_is_approved_then_done_again_once_by_the_requester(
    client, covered, ada_admin, abe_admin, graph_settings, emulator, other_tenant, q_sync
):
    graph_settings.DOTENV_FILE = None
    url = "/credentials/connect-tenant"
    client.force_login(ada_admin)
    assert client.post(url, connect_form(other_tenant)).status_code == 200
    form = client.post(url + "/apply", {"confirm": "connect"})
    assert form.status_code == 200 and "needs a second person" in form.content.decode()
    assert other_tenant.client_secret not in form.content.decode()
    client.post("/approvals/new", {"payload": form.context["payload"], "reason": "go live"})
    approval = ApprovalRequest.objects.get()
    assert approval.params["tenant_id"] == other_tenant.tenant_id
    assert other_tenant.client_secret not in json.dumps(approval.params)
    assert not AuditEvent.objects.filter(action="tenant.connect").exists()
    with pytest.raises(ApprovalError, match="someone else"):
        services.approve(actor_of(ada_admin), approval.pk)
    services.approve(actor_of(abe_admin), approval.pk)
    assert ApprovalRequest.objects.get().status == "approved"
    # The requester connects again (the secret is never kept): it goes through, once.
    client.post(url, connect_form(other_tenant))
    done = client.post(url + "/apply", {"confirm": "connect"})
    assert f"Connected to tenant {other_tenant.tenant_id}" in done.content.decode()
    assert ApprovalRequest.objects.get().status == "executed"
    assert AuditEvent.objects.get(action="tenant.connect").actor_name == "ada-admin"
    run = AuditEvent.objects.get(action="approval.run")
    assert run.params["approved_by"] == "abe-admin"


def test_api_token_and_api_client_commands_go_through_approval(covered, otto_operator, abe_admin):
    with pytest.raises(CommandError, match="needs a second person"):
        call_command("api_token", "create", "--user", otto_operator.username)
    call_command(
        "api_token", "create", "--user", otto_operator.username, "--request", "--reason", "r"
    )
    token_request = ApprovalRequest.objects.get()
    services.approve(actor_of(abe_admin), token_request.pk)
    out = StringIO()
    call_command(
        "api_token",
        "create",
        "--user",
        otto_operator.username,
        "--approval",
        str(token_request.pk),
        stdout=out,
    )
    assert out.getvalue().startswith(BearerToken.objects.get(user=otto_operator).prefix)

    with pytest.raises(CommandError, match="needs a second person"):
        call_command("api_client", "create", "fleet-api", "--scopes", "messages:send")
    assert not ServiceClient.objects.exists()
    call_command("api_client", "create", "reader", "--scopes", "events:read", stdout=StringIO())
    assert ServiceClient.objects.get().name == "reader"


@override_settings(APPROVAL_NOTIFY_FROM="portal@fleetdemo.example", MESSAGING_SENDER_MAILBOXES=[])
def test_a_new_request_is_e_mailed_to_who_may_approve_it(
    covered, otto_operator, olga_operator, django_capture_on_commit_callbacks
):
    olga_operator.email = "olga@fleetdemo.example"
    olga_operator.save()
    otto_operator.email = "otto@fleetdemo.example"
    otto_operator.save()
    dead_jobs(150)
    with django_capture_on_commit_callbacks(execute=True):
        approval = services.request_approval(
            actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "r", "api"
        )
    mail = OutboundMessage.objects.get()
    assert mail.to_recipients == ["olga@fleetdemo.example"]  # not the requester
    assert f"/approvals/{approval.pk}/" in mail.body and mail.sender == "portal@fleetdemo.example"


@override_settings(APPROVAL_NOTIFY_FROM="portal@fleetdemo.example", MESSAGING_SENDER_MAILBOXES=[])
def test_a_long_summary_in_non_ascii_still_sends_its_e_mail(covered, otto_operator, olga_operator):
    """The send limit is 400 bytes: a summary cut at 400 characters was refused and never sent."""
    dead_jobs(150)
    approval = services.request_approval(
        actor_of(otto_operator), "jobs.retry_all", {"filter": {"status": "dead"}}, "r", "api"
    )
    approval.summary = "Zurücksetzen für " + "é" * 270  # 287 characters, 560 bytes
    notify.approvers_of_request(approval, ["olga@fleetdemo.example"])
    subject = OutboundMessage.objects.get().subject
    assert subject.startswith("[Fleet Graph Portal] Approval needed: Zurücksetzen")
    assert subject.endswith("…") and len(subject.encode()) <= 400


# --------------------------------------------------------------------------- every action


def _pending_credential() -> dict:
    credential = Credential.objects.create(
        display_name="next", fingerprint="0a1b", state="pending", last_verified_at=timezone.now()
    )
    return {"credential_id": credential.pk}


WALK = {
    "jobs.retry_all": ("operator", lambda: dead_jobs(150) or {"filter": {"status": "dead"}}),
    "subscriptions.bulk_renew": ("operator", lambda: {"expiring_within_hours": 24}),
    "recovery.start": ("admin", lambda: {"reset_sync": False}),
    "tenant.connect": (
        "admin",
        lambda: {
            "tenant_id": "contoso.example",
            "client_id": "app-1",
            "authority_host": "https://login.microsoftonline.com",
            "graph_url": "https://graph.microsoft.com/v1.0",
            "credential": "ab12",
            "keep_monitored_users": False,
            "drop_synced_items": False,
        },
    ),
    "credential.activate": ("admin", _pending_credential),
    "credential.rollback": ("admin", lambda: {}),
    "credential.retire": ("admin", _pending_credential),
    "people.make_admin": ("admin", lambda: {"username": "sam-support"}),
    "tokens.create_for_other": (
        "admin",
        lambda: {"username": "sam-support", "name": "x", "scopes": [], "expires_days": 30},
    ),
    "clients.create_sender": (
        "admin",
        lambda: {
            "name": "fleet-api",
            "scopes": ["messages:send"],
            "description": "",
            "expires_days": 90,
        },
    ),
}


def test_the_walk_covers_every_registered_action():
    assert set(WALK) == set(gate.ACTIONS) == set(gate.recommended_keys())


@pytest.mark.parametrize("key", sorted(WALK))
def test_each_action_requester_cannot_approve_an_outsider_cannot_another_can_once(
    key, covered, ada_admin, otto_operator, sam_support, olga_operator, abe_admin
):
    role, make_params = WALK[key]
    requester = otto_operator if role == "operator" else ada_admin
    approver = olga_operator if role == "operator" else abe_admin
    outsider = sam_support if role == "operator" else otto_operator
    approval = services.request_approval(actor_of(requester), key, make_params(), "walk", "api")
    with pytest.raises(ApprovalError, match="someone else must decide"):
        services.approve(actor_of(requester), approval.pk)
    with pytest.raises(PermissionDenied):
        services.approve(actor_of(outsider), approval.pk)
    approved = services.approve(actor_of(approver), approval.pk, "ok")
    # It ran once (a refusal by the action itself still counts as its one run), or, for a
    # tenant connection, waits for its requester to connect again.
    expected = {"approved"} if key == "tenant.connect" else {"executed", "failed"}
    assert approved.status in expected, approved.error
    with pytest.raises(ApprovalError, match="cannot be decided") as refused:
        services.approve(actor_of(approver), approval.pk)
    assert refused.value.status == 409
    assert AuditEvent.objects.filter(action="approval.approve", outcome="success").count() == 1
