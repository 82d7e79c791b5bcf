"""Connect the Teams sender in a real browser against the emulator, which matches redirect URIs
exactly as Entra does: the console shows the redirect URI it sends; registered, the sign-in
comes back and the sender is connected; not registered, Microsoft's sign-in page refuses it
(AADSTS50011) and nothing is connected."""

import pytest
from playwright.sync_api import expect

from integrations.graph import auth
from integrations.microsoft.models import DelegatedAccount
from tests.browser.conftest import open_nav_item
from tests.conftest import PERSONAS
from tests.integrations.microsoft import conftest as graph_fixtures

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

graph_emulator = graph_fixtures.graph_emulator
emulator = graph_fixtures.emulator
graph_settings = graph_fixtures.graph_settings
fresh_process_state = graph_fixtures._fresh_process_state


@pytest.fixture
def browser_context_args(browser_context_args: dict) -> dict:
    # The admin's browser visits the emulator's sign-in page (its own CA, as in test_sso).
    return {**browser_context_args, "ignore_https_errors": True}


def open_credentials(page, sign_in) -> None:
    sign_in(PERSONAS["admin"])
    open_nav_item(page, "Credentials")


def test_the_sender_signs_in_through_the_registered_redirect_uri(
    page, live_server, personas, sign_in, screenshot, graph_settings, emulator
):
    auth.app_token()
    callback = live_server.url + "/credentials/teams-sender/callback"
    emulator.control.set_redirect_uris(emulator.client_id, [callback])
    open_credentials(page, sign_in)
    # What to register in Entra, exactly as the portal will send it.
    expect(page.locator("#sender-title").locator("xpath=..")).to_contain_text(callback)
    page.get_by_label("Service account (UPN, optional)").fill(emulator.service_account_upn)
    page.get_by_role("button", name="Connect Teams sender account").click()
    expect(page.locator(".messages")).to_contain_text(
        f"Teams messages are now sent as {emulator.service_account_upn}"
    )
    screenshot("teams-sender-connected")
    account = DelegatedAccount.objects.get(disconnected_at__isnull=True)
    assert account.upn == emulator.service_account_upn


def test_an_unregistered_redirect_uri_is_refused_at_sign_in(
    page, live_server, personas, sign_in, screenshot, browser_problems, graph_settings, emulator
):
    auth.app_token()
    # Registered for another host name than the one the admin uses: Entra compares exactly.
    emulator.control.set_redirect_uris(
        emulator.client_id, ["https://portal.example.com/credentials/teams-sender/callback"]
    )
    browser_problems.allow(400, r"/oauth2/v2\.0/authorize")
    open_credentials(page, sign_in)
    page.get_by_label("Service account (UPN, optional)").fill(emulator.service_account_upn)
    page.get_by_role("button", name="Connect Teams sender account").click()
    expect(page.locator("body")).to_contain_text("AADSTS50011")
    screenshot("teams-sender-redirect-refused")
    assert not DelegatedAccount.objects.exists()
