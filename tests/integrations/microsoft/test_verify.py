from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from django.utils import timezone

from integrations.graph import auth
from integrations.graph_emulator.testing import RunningEmulator
from integrations.microsoft import verify
from integrations.microsoft.models import Credential, DelegatedAccount, MonitoredUser
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.jobs.models import Job
from portal.runtime import registry
from tests.conftest import free_port
from tests.integrations.microsoft.conftest import reset_singletons

pytestmark = pytest.mark.django_db

NAMES = [
    "Configuration",
    "Token acquisition",
    "Clock",
    "Client secret expiry",
    "Graph reachable",
    "Required permissions",
    "Teams chat read",
    "Subscriptions",
    "Webhook URL",
    "Webhook endpoint",
    "Worker alive",
    "Queue",
]


def by_name(results):
    return {r.name: r for r in results}


@pytest.fixture
def healthy(graph_settings, webhook_receiver, q_sync):
    graph_settings.PUBLIC_BASE_URL = webhook_receiver
    return graph_settings


def test_everything_passes_against_a_healthy_setup(healthy):
    results = verify.run_checks(timeout=5)
    assert [r.name for r in results] == NAMES
    assert all(r.ok for r in results), [r for r in results if not r.ok]
    checks = by_name(results)
    assert "Mail.Send" in checks["Token acquisition"].detail
    assert "eyJ" not in checks["Token acquisition"].detail  # the roles, never the token
    assert checks["Subscriptions"].detail.startswith("no subscriptions yet")
    assert "echoed" in checks["Webhook endpoint"].detail


def test_a_stopped_emulator_fails_clearly(settings, webhook_receiver, q_sync, tmp_path):
    with RunningEmulator(state_dir=tmp_path / "emu") as emu:
        settings.MICROSOFT_AUTHORITY_HOST = emu.authority_host
        settings.MICROSOFT_GRAPH_URL = emu.graph_url
        settings.MICROSOFT_TENANT_ID = emu.tenant_id
        settings.MICROSOFT_CLIENT_ID = emu.client_id
        settings.MICROSOFT_CLIENT_SECRET = emu.client_secret
        settings.MICROSOFT_CA_BUNDLE = str(Path(emu.ca_path))
        settings.USING_EMULATOR = True
        settings.PUBLIC_BASE_URL = webhook_receiver
        ca = Path(emu.ca_path).read_bytes()
        assert all(r.ok for r in verify.run_checks(timeout=5))
    (tmp_path / "ca.pem").write_bytes(ca)  # the emulator's state dir is gone now
    settings.MICROSOFT_CA_BUNDLE = str(tmp_path / "ca.pem")
    reset_singletons()
    checks = by_name(verify.run_checks(timeout=2))
    assert not checks["Token acquisition"].ok
    assert "Could not reach the identity platform" in checks["Token acquisition"].detail
    assert checks["Graph reachable"].detail == "skipped: no token"
    assert checks["Configuration"].ok and checks["Worker alive"].ok


def test_a_wrong_secret_fails_the_token_check(healthy):
    healthy.MICROSOFT_CLIENT_SECRET = "wrong-secret-value"
    checks = by_name(verify.run_checks(timeout=5))
    assert not checks["Token acquisition"].ok
    assert "AADSTS7000215" in checks["Token acquisition"].detail
    assert "wrong-secret-value" not in str(checks)


def test_a_missing_role_fails_the_permission_check(healthy, emulator):
    emulator.control.set_roles(emulator.client_id, ["User.Read.All", "Mail.ReadWrite", "Mail.Send"])
    checks = by_name(verify.run_checks(timeout=5))
    assert checks["Token acquisition"].ok and checks["Graph reachable"].ok
    assert not checks["Required permissions"].ok
    assert "Chat.Read.All" in checks["Required permissions"].detail


def test_missing_configuration_fails(healthy):
    healthy.MICROSOFT_TENANT_ID = ""
    checks = by_name(verify.run_checks(timeout=5))
    assert not checks["Configuration"].ok
    assert "MICROSOFT_TENANT_ID is not set" in checks["Configuration"].detail
    assert not checks["Token acquisition"].ok


def test_graph_unreachable_fails_within_the_timeout(healthy, emulator):
    # Graph answers after 4 s; the check gives up at its 1 s timeout. A read timeout (not a
    # late success) is the proof that the timeout applied: no stopwatch needed.
    emulator.control.inject_fault(path="/v1.0/users$", kind="latency", latency_ms=4000)
    checks = by_name(verify.run_checks(timeout=1))
    assert not checks["Graph reachable"].ok
    assert "read timeout" in checks["Graph reachable"].detail


def test_no_webhook_receiver_fails(healthy):
    healthy.PUBLIC_BASE_URL = f"http://127.0.0.1:{free_port()}"
    checks = by_name(verify.run_checks(timeout=2))
    assert not checks["Webhook endpoint"].ok
    assert "webhook receiver not reachable" in checks["Webhook endpoint"].detail


def test_a_receiver_without_the_route_is_not_installed(healthy, webhook_receiver):
    healthy.WEBHOOK_VALIDATION_URL = webhook_receiver + "/api/webhooks/nothing-here"
    checks = by_name(verify.run_checks(timeout=2))
    assert "not installed" in checks["Webhook endpoint"].detail


def test_no_worker_fails(graph_settings, webhook_receiver):
    graph_settings.PUBLIC_BASE_URL = webhook_receiver
    checks = by_name(verify.run_checks(timeout=1))
    assert not checks["Worker alive"].ok
    assert "no worker answered a ping within 1s" in checks["Worker alive"].detail


def make_jobs(status: str, count: int) -> None:
    # A retrying job waits for its back-off; these have waited theirs out, so they are due.
    back_off_over = timezone.now() if status == Job.Status.RETRYING else None
    Job.objects.bulk_create(
        Job(job_type="tests.noop", status=status, next_attempt_at=back_off_over)
        for _ in range(count)
    )


def test_the_queue_check_counts_the_job_table(healthy):
    make_jobs(Job.Status.PENDING, 2)
    make_jobs(Job.Status.RETRYING, 1)
    make_jobs(Job.Status.DEAD, 3)
    make_jobs(Job.Status.SUCCEEDED, 4)
    check = by_name(verify.run_checks(timeout=2))["Queue"]
    assert check.ok
    assert check.detail == "3 due, 3 dead"


def test_a_deep_queue_fails_at_the_alert_threshold(healthy):
    make_jobs(Job.Status.PENDING, 2)
    registry.set_value(Actor.system("tests"), "ALERT_QUEUE_LENGTH", 1)
    check = by_name(verify.run_checks(timeout=2))["Queue"]
    assert not check.ok
    assert check.detail == "2 due, 0 dead: 2 jobs are due and not started (threshold 1)."


def test_dead_jobs_fail_at_the_alert_threshold(healthy):
    make_jobs(Job.Status.DEAD, 3)
    registry.set_value(Actor.system("tests"), "ALERT_DEAD_LETTERS", 2)
    check = by_name(verify.run_checks(timeout=2))["Queue"]
    assert not check.ok
    assert check.detail.endswith("3 jobs are in the dead-letter queue (threshold 2).")


def test_the_service_is_role_checked_and_audited(healthy, vera_viewer, sam_support):
    viewer = Actor(kind="user", name="vera", role="viewer", user=vera_viewer)
    with pytest.raises(PermissionDenied):
        verify.verify_integration(viewer, timeout=2)
    support = Actor(kind="user", name="sam", role="support", user=sam_support)
    results = verify.verify_integration(support, timeout=5)
    assert all(r.ok for r in results)
    outcomes = list(
        AuditEvent.objects.filter(action="integration.verify")
        .order_by("id")
        .values_list("outcome", flat=True)
    )
    assert outcomes == ["denied", "success"]


def test_a_real_worker_answers_the_ping(graph_settings, webhook_receiver, qcluster):
    qcluster(workers=1)
    graph_settings.PUBLIC_BASE_URL = webhook_receiver
    checks = by_name(verify.run_checks(timeout=20))
    assert checks["Worker alive"].ok, checks["Worker alive"].detail
    assert "Q_SYNC" not in checks["Worker alive"].detail


# --------------------------------------------------------------------------- Entra knowledge


@pytest.mark.parametrize(
    "granted, required",
    [
        (["User.Read.All", "Mail.ReadWrite", "Mail.Send", "Chat.ReadWrite.All"], "Chat.Read.All"),
        (["User.Read.All", "Mail.ReadWrite", "Mail.Send", "Chat.Read.All"], "Mail.Read"),
        (["Directory.Read.All", "Mail.ReadWrite", "Mail.Send", "Chat.Read.All"], "User.Read.All"),
    ],
)
def test_a_higher_permission_satisfies_a_lower_one(healthy, emulator, granted, required):
    healthy.GRAPH_REQUIRED_ROLES = [required]
    emulator.control.set_roles(emulator.client_id, granted)
    check = by_name(verify.run_checks(timeout=5))["Required permissions"]
    assert check.ok, check.detail


def test_a_missing_permission_says_what_breaks(healthy, emulator):
    emulator.control.set_roles(emulator.client_id, ["User.Read.All", "Mail.Read", "Mail.Send"])
    check = by_name(verify.run_checks(timeout=5))["Required permissions"]
    assert not check.ok
    assert "Mail.ReadWrite (mail sync and sending mail as a draft" in check.detail
    assert "Chat.Read.All (Teams chat subscriptions and chat delta sync fail)" in check.detail


def test_a_sender_without_channel_read_is_a_warning(healthy, emulator):
    roles = ["User.Read.All", "Mail.ReadWrite", "Mail.Send", "Chat.Read.All"]
    emulator.control.set_roles(emulator.client_id, roles)
    DelegatedAccount.objects.create(upn="svc@x", scopes="ChatMessage.Send ChannelMessage.Send")
    check = by_name(verify.run_checks(timeout=5))["Required permissions"]
    assert check.ok
    assert "warning: the app lacks the application permission ChannelMessage.Read.All" in (
        check.detail
    )

    emulator.control.set_roles(emulator.client_id, [*roles, "ChannelMessage.Read.All"])
    check = by_name(verify.run_checks(timeout=5))["Required permissions"]
    assert check.ok and "warning" not in check.detail


@pytest.fixture
def chat_watcher(emulator):
    user = emulator.control.tenant()["users"][0]
    return MonitoredUser.objects.create(
        identifier=user["userPrincipalName"], graph_id=user["id"], upn=user["userPrincipalName"]
    )


def test_the_teams_probe_reads_one_delta_page(healthy, emulator, chat_watcher):
    mark = len(emulator.control.requests_log())
    check = by_name(verify.run_checks(timeout=5))["Teams chat read"]
    assert check.ok, check.detail
    probes = [
        r for r in emulator.control.requests_log(since=mark) if "getAllMessages/delta" in r["path"]
    ]
    assert len(probes) == 1 and "%24top=1" in probes[0]["query"]


def test_the_teams_probe_tells_protected_api_apart(healthy, emulator, chat_watcher):
    emulator.control.set_protected_api(emulator.client_id, False)
    check = by_name(verify.run_checks(timeout=5))["Teams chat read"]
    assert not check.ok and check.detail.startswith("protected API not approved (403")
    emulator.control.set_protected_api(emulator.client_id, True)
    emulator.control.set_roles(emulator.client_id, ["User.Read.All", "Mail.ReadWrite"])
    reset_singletons()  # the cached token still carries the old roles
    check = by_name(verify.run_checks(timeout=5))["Teams chat read"]
    assert not check.ok and "protected API" not in check.detail and "403" in check.detail


@pytest.mark.parametrize(
    "base, message",
    [
        ("http://portal.example.com", "must be https"),
        ("https://127.0.0.1:8443", "is loopback or private"),
        ("https://10.1.2.3", "is loopback or private"),
    ],
)
# Only the URL check runs: the round trip after it would really POST to these hosts (the
# suite's network guard refuses anything but loopback).
def test_outside_the_emulator_the_webhook_url_must_be_public_https(healthy, base, message):
    healthy.USING_EMULATOR = False
    healthy.PUBLIC_BASE_URL = base
    check = verify.check_webhook_url(verify._Context(timeout=2))
    assert not check.ok and message in check.detail


def test_outside_the_emulator_a_public_https_url_passes(healthy):
    healthy.USING_EMULATOR = False
    healthy.WEBHOOK_BASE_URL = "https://93.184.215.14"
    assert verify.check_webhook_url(verify._Context(timeout=2)).ok


def test_outside_the_emulator_clock_skew_over_five_minutes_fails(healthy, emulator):
    healthy.USING_EMULATOR = False
    assert by_name(verify.run_checks(timeout=5))["Clock"].ok
    emulator.control.advance_clock(400)
    check = by_name(verify.run_checks(timeout=5))["Clock"]
    assert not check.ok and "behind the identity platform (more than 5 minutes)" in check.detail


def test_the_secret_expiry_is_shown_as_entered(healthy):
    check = by_name(verify.run_checks(timeout=5))["Client secret expiry"]
    assert check.ok and "expiry not recorded" in check.detail
    auth.app_token()
    Credential.objects.filter(state="active").update(
        expires_at=timezone.now() + timedelta(days=10, hours=1)
    )
    check = by_name(verify.run_checks(timeout=5))["Client secret expiry"]
    assert check.ok and "(10 days; as entered); warning: rotate it soon" in check.detail


@pytest.mark.django_db(transaction=True)
def test_a_delegated_scope_without_consent_is_named(healthy, emulator, sender_connected):
    check = by_name(verify.run_checks(timeout=5))["Required permissions"]
    assert check.ok and "Teams sender" not in check.detail, check.detail
    # An admin withdraws consent for Chat.Create (or it was never granted for the tenant).
    scopes = ["ChatMessage.Send", "ChannelMessage.Send", "User.Read", "offline_access"]
    emulator.control._call("PUT", f"apps/{emulator.client_id}/delegated-scopes", {"scopes": scopes})
    check = by_name(verify.run_checks(timeout=5))["Required permissions"]
    assert not check.ok
    assert "lacks delegated permission(s): Chat.Create (Teams messages to a person" in check.detail
    assert "ChatMessage.Send" not in check.detail
