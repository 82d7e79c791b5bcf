import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from integrations.microsoft.messaging import outbox
from integrations.microsoft.models import OutboundMessage
from portal.events.models import Event, EventEndpoint
from tests.browser.conftest import open_nav_item
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_operator_finds_a_failed_message_and_resends_it(
    page, live_server, personas, sign_in, screenshot
):
    message = outbox.send_mail(
        "dispatch@fleet.example",
        ["driver4@fleet.example"],
        "Depot closed",
        "Go to depot 5.",
        created_by="client:fleet-api",
    )
    OutboundMessage.objects.filter(pk=message.pk).update(
        status="failed", last_error="Graph refused the recipient (ErrorInvalidRecipients)"
    )
    sign_in(PERSONAS["operator"])
    open_nav_item(page, "Messages")
    expect(page.get_by_role("heading", name="Messages")).to_be_visible()
    expect(page.get_by_text("ErrorInvalidRecipients").first).to_be_visible()
    screenshot("messages-failed")
    page.get_by_role("link", name=f"#{message.pk}", exact=True).click()
    expect(page.get_by_role("heading", name=re.compile(f"Message #{message.pk}"))).to_be_visible()
    page.get_by_role("button", name="Resend as a new message").click()
    expect(page.locator(".messages")).to_contain_text("as a resend of")
    screenshot("message-resent")


def test_admin_adds_an_event_endpoint_and_sees_its_secret_once(
    page, live_server, personas, sign_in, screenshot, settings
):
    settings.DEBUG = True
    settings.EVENT_ENDPOINT_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    sign_in(PERSONAS["admin"])
    open_nav_item(page, "Event endpoints")
    page.get_by_label("URL (https)").fill("http://127.0.0.1:9/hooks/m365")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#new-secret")).to_contain_text("whsec_")
    screenshot("event-endpoint-created")
    page.get_by_role("link", name=re.compile("127.0.0.1:9")).click()
    expect(page.locator("#new-secret")).to_have_count(0)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".messages")).to_contain_text("Paused")


def test_the_dashboard_shows_the_gateways_health_and_leads_to_the_fix(
    page, live_server, personas, sign_in, screenshot
):
    events = [Event.objects.create(type="mail.received", data={"n": i}) for i in range(3)]
    EventEndpoint.objects.create(
        url="https://dispatch.fleet.example/hooks",
        secret_encrypted="x",
        cursor=events[0].id,
        failing_since=timezone.now(),
    )
    for n in range(2):
        OutboundMessage.objects.create(
            channel="mail",
            status="failed",
            body="x",
            idempotency_key=f"dash-{n}",
            last_error="Graph refused the recipient (ErrorInvalidRecipients)",
            last_error_at=timezone.now(),
        )
    sign_in(PERSONAS["admin"])
    tiles = page.get_by_role("region", name="Fleet gateway")
    expect(tiles.locator("a.tile", has_text="messages failed (1 h)")).to_contain_text("2")
    expect(tiles.locator(".tile", has_text="no message waiting to be sent")).to_contain_text("—")
    failing = tiles.locator("a.tile", has_text="event endpoints failing or disabled")
    expect(failing).to_contain_text("1")
    expect(failing).to_have_class(re.compile(r"\bbad\b"))
    expect(tiles.locator("a.tile", has_text="events waiting for delivery")).to_contain_text("2")
    screenshot("dashboard-gateway")
    tiles.locator("a.tile", has_text="messages failed (1 h)").click()
    expect(page.get_by_text("ErrorInvalidRecipients").first).to_be_visible()
    page.go_back()
    failing.click()
    expect(page.get_by_role("heading", name="Event endpoints")).to_be_visible()
    expect(page.get_by_text("dispatch.fleet.example").first).to_be_visible()
