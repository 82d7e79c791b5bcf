import re

import pytest
from playwright.sync_api import expect

from portal.audit.models import AuditEvent
from tests.browser.conftest import open_nav_item
from tests.conftest import NAV_BY_ROLE, PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

EXPECTED_NAV = NAV_BY_ROLE


@pytest.mark.parametrize("role", list(PERSONAS))
def test_each_role_signs_in_and_sees_its_navigation(
    role, page, live_server, personas, sign_in, screenshot
):
    sign_in(PERSONAS[role])
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.locator("a")).to_have_text(EXPECTED_NAV[role])
    expect(page.locator(".whoami .badge")).to_have_text(role)
    screenshot(f"dashboard-{role}")
    assert AuditEvent.objects.filter(action="auth.login", actor_name=PERSONAS[role]).exists()


def test_the_audit_log_filters_in_place_with_htmx_and_signs_out(
    page, live_server, personas, sign_in, screenshot
):
    sign_in(PERSONAS["operator"])
    open_nav_item(page, "Audit log")
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    page.get_by_label("Action").fill("auth.")
    page.get_by_role("button", name="Filter").click()
    # hx-push-url keeps the filters in the address bar, so the view can be shared or reloaded.
    expect(page).to_have_url(re.compile(r"/audit/\?.*action=auth\."))
    expect(page.locator("#results tbody tr").first).to_contain_text("auth.login")
    screenshot("audit-log")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_a_wrong_password_shows_a_clear_message(page, live_server, personas, sign_in):
    sign_in(PERSONAS["viewer"], "wrong password")
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
