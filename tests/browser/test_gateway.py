import re

import pytest
from playwright.sync_api import expect

from integrations.microsoft import messaging
from integrations.microsoft.models import OutboundMessage
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_operator_finds_a_failed_message_and_resends_it(
    page, live_server, personas, sign_in, screenshot
):
    message = messaging.send_mail(
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
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Messages").click()
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
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Event endpoints").click()
    page.get_by_label("URL (https)").fill("http://127.0.0.1:9/hooks/m365")
    page.get_by_role("button", name="Add endpoint").click()
    expect(page.locator("#new-secret")).to_contain_text("whsec_")
    screenshot("event-endpoint-created")
    page.get_by_role("link", name=re.compile("127.0.0.1:9")).click()
    expect(page.locator("#new-secret")).to_have_count(0)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".messages")).to_contain_text("Paused")
