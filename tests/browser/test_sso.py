"""Sign in with Microsoft in a real browser, through the emulator's sign-in page."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import open_nav_item
from tests.conftest import NAV_BY_ROLE
from tests.portal.access.sso_support import (  # noqa: F401  (fixtures)
    ENTRA_STAFF,
    NO_ROLE,
    configure,
    emulator,
    graph_emulator,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def browser_context_args(browser_context_args: dict) -> dict:
    # The emulator's certificate comes from its own local CA.
    return {**browser_context_args, "ignore_https_errors": True}


@pytest.fixture
def entra(settings, emulator, live_server):
    configure(settings, emulator, live_server.url)
    return emulator


def _sign_in_with_microsoft(page, live_server, name):
    page.goto(live_server.url + "/login/")
    page.get_by_role("link", name="Sign in with Microsoft").click()
    expect(page.get_by_role("heading", name="Graph emulator — sign in")).to_be_visible()
    page.get_by_role("link", name=name, exact=True).click()


@pytest.mark.parametrize(
    ("role", "name"),
    [
        ("viewer", "Sofia Marchetti"),
        ("support", "Priya Raman"),
        ("operator", "Hannah Lindqvist"),
        ("admin", "Maria Kowalski"),
    ],
)
def test_each_role_signs_in_with_microsoft(page, live_server, entra, screenshot, role, name):
    _sign_in_with_microsoft(page, live_server, name)
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.locator("a")).to_have_text(NAV_BY_ROLE[role])
    expect(page.locator(".whoami .badge")).to_have_text(role)
    if role == "admin":
        screenshot("sso-sign-in-admin")


def test_no_role_gets_a_clear_page(page, live_server, entra, browser_problems, screenshot):
    # The refusal itself is the one expected 403 (the page below); nothing else may fail.
    browser_problems.allow(403, r"/login/microsoft/callback")
    _sign_in_with_microsoft(page, live_server, "Erik Johansson")
    expect(page.get_by_role("heading", name="Not signed in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("no portal role is assigned to you")
    screenshot("sso-no-role")


def test_a_role_change_in_entra_shows_at_the_next_sign_in_and_on_people(
    page, live_server, entra, screenshot
):
    _sign_in_with_microsoft(page, live_server, "Sofia Marchetti")
    expect(page.locator(".whoami .badge")).to_have_text("viewer")
    page.get_by_role("button", name="Sign out").click()
    # Let the sign-out finish before the next navigation (a goto would abort it mid-redirect).
    expect(page.get_by_role("link", name="Sign in with Microsoft")).to_be_visible()
    entra.control.set_app_roles(ENTRA_STAFF["viewer"], ["Portal.Admin"])
    _sign_in_with_microsoft(page, live_server, "Sofia Marchetti")
    expect(page.locator(".whoami .badge")).to_have_text("admin")
    open_nav_item(page, "People")
    row = page.get_by_role("row").filter(has_text=ENTRA_STAFF["viewer"])
    expect(row).to_contain_text("Entra ID")
    expect(row).to_contain_text("Microsoft Entra ID with MFA")
    screenshot("people")
