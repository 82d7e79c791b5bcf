"""The Graph pages in a real browser, against the Graph emulator: renew a subscription, rotate
a secret, reset a user's sync, toggle real-time sync, run the recovery — and find each in the
audit log. Every page gets a screenshot under test-artifacts/screenshots/."""

import re
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from integrations.graph import auth
from integrations.microsoft import certificates, subscriptions, verify
from integrations.microsoft.models import GraphCall, SyncRun, SyncState
from portal.access.actors import Actor
from portal.audit.models import AuditEvent
from portal.runtime import registry
from tests.browser.conftest import open_nav_item
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def nav(page, label):
    open_nav_item(page, label)


def find_in_audit_log(page, action):
    nav(page, "Audit log")
    page.get_by_label("Action").fill(action)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#results tbody tr").first).to_contain_text(action)


@pytest.fixture
def subscribed(webhook_settings, monitored, drain):
    subscriptions.setup(Actor.system("tests"))
    drain()
    return monitored


def test_operator_compares_and_renews_a_subscription(
    page, live_server, personas, sign_in, screenshot, subscribed
):
    sign_in(PERSONAS["operator"])
    nav(page, "Subscriptions")
    expect(page.get_by_role("heading", name="Webhook subscriptions")).to_be_visible()
    expect(page.locator("#subscriptions tbody tr")).to_have_count(2)
    screenshot("subscriptions")
    page.get_by_role("link", name="Compare with Graph").click()
    expect(page.locator("#compare")).to_contain_text("2 of 2 in step")
    screenshot("subscriptions-compare")
    page.locator("#subscriptions").get_by_role("button", name="Renew").first.click()
    expect(page.locator(".messages")).to_contain_text("renewed: it now expires")
    page.get_by_role("link", name="Set up all…").click()
    expect(page.get_by_role("heading", name="Dry run: what would happen now")).to_be_visible()
    screenshot("subscriptions-setup-dry-run")
    find_in_audit_log(page, "subscription.renew")
    assert AuditEvent.objects.filter(
        action="subscription.renew", actor_name=PERSONAS["operator"]
    ).exists()


def test_admin_rotates_the_client_secret(
    page, live_server, personas, sign_in, screenshot, graph_settings, emulator
):
    auth.app_token()  # the running secret becomes the active credential
    new_value = emulator.control.add_secret(emulator.client_id)["secretText"]
    sign_in(PERSONAS["admin"])
    nav(page, "Credentials")
    page.get_by_label("Secret value").fill(new_value)
    page.get_by_label(re.compile("^Name")).fill("Rotation Q3")
    page.get_by_role("button", name="Add as pending").click()
    expect(page.locator(".messages")).to_contain_text("verify it next")
    row = page.locator("tr", has_text="Rotation Q3")
    row.get_by_role("button", name="Verify").click()
    expect(page.locator(".messages")).to_contain_text("works")
    page.locator("tr", has_text="Rotation Q3").get_by_role("button", name="Activate").click()
    expect(page.locator(".messages")).to_contain_text("now the active credential")
    expect(page.locator("tr", has_text="Rotation Q3")).to_contain_text("active")
    expect(page.get_by_role("link", name="Roll back to this…")).to_be_visible()
    screenshot("credentials")
    assert new_value not in page.content()
    find_in_audit_log(page, "credential.activate")


def test_admin_switches_to_a_certificate_without_a_restart(
    page, live_server, personas, sign_in, graph_settings, emulator
):
    auth.app_token()
    key_pem, cert_pem = certificates.generate("browser-switch", days=60)
    emulator.control.add_certificate(emulator.client_id, cert_pem)
    sign_in(PERSONAS["admin"])
    nav(page, "Credentials")
    page.get_by_label("Certificate with its private key").set_input_files(
        files=[
            {
                "name": "portal.pem",
                "mimeType": "application/x-pem-file",
                "buffer": (key_pem + cert_pem).encode(),
            }
        ]
    )
    page.get_by_label(re.compile("^Certificate name")).fill("Browser certificate")
    page.get_by_role("button", name="Add certificate as pending").click()
    expect(page.locator(".messages")).to_contain_text("thumbprint")
    row = page.locator("tr", has_text="Browser certificate")
    expect(row).to_contain_text("CN=browser-switch")
    row.get_by_role("button", name="Verify").click()
    expect(page.locator(".messages")).to_contain_text("works")
    page.locator("tr", has_text="Browser certificate").get_by_role(
        "button", name="Activate"
    ).click()
    expect(page.locator(".messages")).to_contain_text("(certificate) is now the active credential")
    assert "PRIVATE KEY" not in page.content()
    # The running process uses it at once: the app's secrets are gone in "Entra ID".
    for secret in emulator.control.secrets(emulator.client_id):
        emulator.control.remove_secret(emulator.client_id, secret["keyId"])
    auth.drop_cached_app_token()
    assert auth.app_token()


def test_operator_resets_a_users_sync_and_reads_the_timeline(
    page, live_server, personas, sign_in, screenshot, monitored
):
    now = timezone.now()
    state = SyncState.objects.create(
        monitored_user=monitored,
        kind="messages",
        status="idle",
        delta_link="https://d/l",
        token_obtained_at=now - timedelta(days=3),
        last_success_at=now - timedelta(minutes=4),
        last_attempt_at=now - timedelta(minutes=4),
        item_count=42,
        total_added=42,
    )
    SyncRun.objects.create(
        state=state,
        kind="full",
        outcome="succeeded",
        pages=3,
        added=42,
        duration_ms=812,
        trigger="subscription:created",
        finished_at=now,
    )
    GraphCall.objects.create(
        method="GET",
        route="/users/{id}/mailFolders/{id}/messages/delta",
        status=429,
        throttled=True,
        retry_after=30,
        mailbox=monitored.graph_id.lower(),
    )
    sign_in(PERSONAS["operator"])
    nav(page, "Users & sync")
    screenshot("sync-users")
    page.get_by_role("link", name=str(monitored), exact=True).click()
    expect(page.get_by_role("heading", name=str(monitored))).to_be_visible()
    card = page.locator(".sync-card", has_text="messages").first
    card.locator("summary", has_text="Reset…").click()
    expect(card.get_by_text("the next run")).to_be_visible()
    screenshot("sync-user")
    card.get_by_role("button", name="Reset mail sync state").click()
    expect(page.locator(".messages")).to_contain_text("Sync state of")
    state.refresh_from_db()
    assert state.delta_link == "" and state.reset_requested
    page.get_by_role("link", name=re.compile("Why isn't this syncing")).click()
    expect(page.locator(".timeline tbody")).to_contain_text("sync.reset")
    expect(page.locator(".timeline tbody")).to_contain_text("Graph throttled")
    screenshot("sync-timeline")
    find_in_audit_log(page, "sync.reset")


def test_operator_turns_realtime_sync_off(page, live_server, personas, sign_in, screenshot):
    registry._cache.clear()
    sign_in(PERSONAS["operator"])
    nav(page, "Settings")
    group = page.locator("#settings-sync")
    group.get_by_label("Real-time sync on").uncheck()
    group.get_by_label("Why?").fill("429 storm, the runbook's rate-limiting step")
    group.get_by_role("button", name="Save sync settings").click()
    expect(page.locator(".messages")).to_contain_text("is now off")
    find_in_audit_log(page, "settings.change")
    event = AuditEvent.objects.get(action="settings.change")
    assert event.params == {"before": True, "after": False}


def test_admin_runs_the_recovery_page(
    page, live_server, personas, sign_in, screenshot, subscribed, q_sync
):
    sign_in(PERSONAS["admin"])
    nav(page, "Recovery")
    screenshot("recovery")
    page.get_by_label("Type RECOVER to start").fill("RECOVER")
    page.get_by_role("button", name="Start recovery").click()
    expect(page.get_by_role("heading", name=re.compile("Recovery session"))).to_be_visible()
    for title in ("Pause processing", "Clean up subscriptions"):
        page.get_by_role("button", name=f"Run: {title}").click()
        expect(page.locator(".messages")).to_contain_text(f"“{title}” done")
    page.get_by_role("button", name="Skip this step").click()
    expect(page.locator(".messages")).to_contain_text("skipped")
    for title in ("Resume processing", "Set up webhooks"):
        page.get_by_role("button", name=f"Run: {title}").click()
        expect(page.locator(".messages")).to_contain_text(f"“{title}” done")
    page.get_by_role("button", name="Run: Verify").click()
    expect(page.locator(".page-head .big-state")).to_contain_text("finished")
    screenshot("recovery-session")
    start = AuditEvent.objects.get(action="recovery.start")
    session_events = set(
        AuditEvent.objects.filter(request_id=start.target_id).values_list("action", flat=True)
    )
    assert {
        "jobs.pause",
        "webhooks.cleanup",
        "jobs.resume",
        "webhooks.setup",
        "integration.verify",
        "recovery.finish",
    } <= session_events
    find_in_audit_log(page, "recovery.")


def test_support_runs_the_checklist_and_views_graph_calls(
    page, live_server, personas, sign_in, screenshot, subscribed, q_sync
):
    sign_in(PERSONAS["support"])
    nav(page, "Verify")
    page.get_by_role("button", name="Run the checks").click()
    expect(page.locator("#results .checklist li")).to_have_count(len(verify.CHECKS))
    expect(page.locator("#results")).to_contain_text("Token")
    screenshot("verify")
    nav(page, "Graph calls")
    expect(page.get_by_role("heading", name="Graph calls and rate limits")).to_be_visible()
    page.get_by_label("Outcome").select_option("ok")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"status=ok"))
    expect(page.locator("#calls tbody tr").first).to_contain_text("200")
    screenshot("graph-calls")
    nav(page, "Dashboard")
    expect(page.get_by_role("heading", name="Integration health")).to_be_visible()
    screenshot("dashboard-graph")
    assert AuditEvent.objects.filter(
        action="integration.verify", actor_name=PERSONAS["support"]
    ).exists()
