"""What cannot be undone asks first: with script (htmx loads the confirmation into the page)
and without (the same confirmation as a page)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from integrations.microsoft.models import Credential
from portal.lib.crypto import encrypt
from tests.browser.conftest import open_nav_item
from tests.conftest import PERSONA_PASSWORD, PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def rotation_in_grace(db):
    now = timezone.now()
    Credential.objects.create(
        display_name="Rotation Q3",
        fingerprint="aaaa1111",
        secret_encrypted=encrypt("new"),
        state="active",
    )
    return Credential.objects.create(
        display_name="Rotation Q2",
        fingerprint="bbbb2222",
        secret_encrypted=encrypt("old"),
        state="grace",
        grace_until=now + timedelta(hours=20),
        expires_at=now + timedelta(days=2, hours=1),
        last_verified_at=now - timedelta(days=3),
        last_error="AADSTS7000215: Invalid client secret provided.",
        last_error_at=now - timedelta(hours=2),
    )


@pytest.mark.parametrize(
    "viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}], ids=["1280", "390"]
)
def test_roll_back_and_retire_ask_first(
    viewport, page, live_server, personas, sign_in, screenshot, rotation_in_grace
):
    page.set_viewport_size(viewport)
    sign_in(PERSONAS["admin"])
    open_nav_item(page, "Credentials")
    page.get_by_role("link", name="Roll back to this…").click()
    card = page.locator("#confirm-panel .confirm-card")
    expect(card).to_contain_text("becomes the active secret")
    expect(card).to_contain_text("2 days left")
    expect(card).to_contain_text("AADSTS7000215")
    assert page.url.endswith("/credentials/")  # loaded in place
    screenshot(f"confirm-rollback-{viewport['width']}")
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]

    page.get_by_role("link", name="Retire now…").click()
    expect(card).to_contain_text("rolling back to it is no longer possible")
    card.get_by_label("Type retire to confirm").fill("retire")
    card.get_by_role("button", name=f"Retire secret #{rotation_in_grace.pk}").click()
    expect(page.locator(".messages")).to_contain_text("is retired")
    rotation_in_grace.refresh_from_db()
    assert rotation_in_grace.state == "retired"


def test_the_confirmation_is_a_page_without_javascript(
    browser, live_server, personas, rotation_in_grace, browser_problems
):
    browser_problems.allow(400, r"/credentials/\d+/retire$")
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(live_server.url + "/login/")
    page.get_by_label("Username").fill(PERSONAS["admin"])
    page.get_by_label("Password").fill(PERSONA_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.goto(live_server.url + "/credentials/")
    page.get_by_role("link", name="Retire now…").click()
    expect(page).to_have_url(f"{live_server.url}/credentials/{rotation_in_grace.pk}/retire")
    # The wrong word: refused, nothing retired.
    page.get_by_label("Type retire to confirm").fill("yes")
    page.get_by_role("button", name=f"Retire secret #{rotation_in_grace.pk}").click()
    expect(page.get_by_role("alert")).to_contain_text('Type "retire" to confirm.')
    rotation_in_grace.refresh_from_db()
    assert rotation_in_grace.state == "grace"
    context.close()
