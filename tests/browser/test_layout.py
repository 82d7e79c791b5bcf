"""Pages at a 1280 px laptop width: everything an operator acts on is on screen."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from integrations.microsoft import backoff
from integrations.microsoft.models import GraphCall, MonitoredUser, Subscription
from portal.access.actors import Actor
from portal.audit.services import record
from portal.lib.crypto import encrypt
from tests.browser.test_console_layout import LAPTOP, PHONE, assert_no_sideways_scroll
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def wide_rows():
    """Rows as wide as real ones get: UPNs like the demo tenant's (no hyphen to wrap at),
    errors, a missing lifecycle URL, an expired one, Graph ids."""
    now = timezone.now()
    for n in range(12):
        upn = f"konstantina.papadopoulou{n}@fleetdemo.onmicrosoft.com"
        # Graph user ids are GUIDs (36 characters; the column holds 64).
        user = MonitoredUser.objects.create(
            identifier=upn, upn=upn, graph_id=f"{n:08d}-3c2b-4a1d-9e8f-{n:012d}"
        )
        Subscription.objects.create(
            monitored_user=user,
            kind="chatMessages" if n % 2 else "messages",
            graph_id=f"7f9c2b1e-5d4a-4c3b-9a8e-{n:012d}",
            resource=f"users/{user.graph_id}/messages",
            change_types="created,updated,deleted",
            notification_url="https://portal.example/api/webhooks/mail",
            lifecycle_url="" if n == 1 else "https://portal.example/api/webhooks/lifecycle",
            client_state_encrypted=encrypt("x"),
            state=Subscription.State.ACTIVE,
            expiration=now + timedelta(hours=30 - 8 * n),
            lifetime_started_at=now - timedelta(hours=10),
            last_notification_at=now - timedelta(minutes=3),
            last_error="Graph answered 403 Forbidden: the app lacks Chat.Read.All for this tenant"
            if n == 2
            else "",
        )


def test_subscription_actions_are_on_screen_at_1280(
    page, live_server, sign_in, screenshot, personas, wide_rows
):
    page.set_viewport_size({"width": 1280, "height": 800})
    sign_in(PERSONAS["admin"])
    page.goto(live_server.url + "/subscriptions/")
    buttons = page.locator("#subscriptions td.row-actions").locator("a, button")
    expect(buttons).to_have_count(12 * 3)  # Renew, Recreate…, Delete… per row
    shot = screenshot("subscriptions-1280")
    for i in range(buttons.count()):
        button = buttons.nth(i)
        expect(button).to_be_visible()
        box = button.bounding_box()
        assert box is not None and box["x"] >= 0, button.inner_text()
        assert box["x"] + box["width"] <= 1280, f"{button.inner_text()} ends at {box}"
    # Nothing is hidden behind a horizontal scroll bar either.
    card = page.locator("#subscriptions")
    assert card.evaluate("el => el.scrollWidth <= el.clientWidth"), shot
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


@pytest.fixture
def wide_graph_calls():
    """Graph calls as wide as real ones get: a long mailbox address, a long route with ids,
    request-ids (GUIDs), throttled calls whose Retry-After is still running, an operator's
    back-off with a long reason."""
    now = timezone.now()
    upn = "konstantina.papadopoulou-vasilakopoulou@fleetdemo.onmicrosoft.com"
    user = MonitoredUser.objects.create(
        identifier=upn, upn=upn, graph_id="0f8fad5b-d9cb-469f-a165-70867728950e"
    )
    route = (
        "/users/{id}/mailFolders/{id}/messages/delta?$select=subject,from,toRecipients,"
        "receivedDateTime,internetMessageId&$deltatoken={token}"
    )
    for n in range(30):
        GraphCall.objects.create(
            method="GET",
            route=route,
            status=429 if n % 3 == 0 else 200,
            throttled=n % 3 == 0,
            retry_after=600 if n % 3 == 0 else None,
            duration_ms=1234,
            mailbox=user.graph_id
            if n % 2
            else f"unknown-mailbox-{n}@contoso-holdings.onmicrosoft.com",
            request_id=f"5d2c1c4e-7b1a-4f7e-9a3b-{n:012d}",
            error_code="TooManyRequests.ApplicationThrottledForThisMailbox" if n % 3 == 0 else "",
            created_at=now - timedelta(seconds=n),
        )
    GraphCall.objects.create(
        method="POST", route=route, status=429, throttled=True, retry_after=600, mailbox=""
    )
    backoff.back_off_mailbox(
        Actor.system("tests"),
        upn,
        30,
        "Draws most of the tenant's 429s since the migration of the shared mailboxes this morning",
    )


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["1280", "390"])
def test_the_graph_calls_page_fits_with_wide_data(
    viewport, page, live_server, sign_in, screenshot, personas, wide_graph_calls
):
    page.set_viewport_size(viewport)
    sign_in(PERSONAS["operator"])
    page.goto(live_server.url + "/graph/")
    expect(page.locator(".mailbox-backoff")).to_have_count(1)
    shot = screenshot(f"graph-calls-{viewport['width']}")
    # Every card shows all its columns: none scrolls inside, the page does not scroll sideways.
    cards = page.locator("main .card")
    assert cards.count() >= 5
    for i in range(cards.count()):
        card = cards.nth(i)
        assert card.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), (
            card.locator("h2").first.inner_text() if card.locator("h2").count() else i,
            shot,
        )
    assert_no_sideways_scroll(page)


def test_the_dashboards_latest_actions_fit_a_phone(
    page, live_server, sign_in, screenshot, personas
):
    for n in range(8):
        record(
            "subscription.bulk_renew",
            actor=Actor.system(f"konstantina.papadopoulou-vasilakopoulou{n}@fleetdemo.example"),
            outcome="denied" if n % 2 else "success",
        )
    page.set_viewport_size(PHONE)
    sign_in(PERSONAS["admin"])
    card = page.locator("section.card", has=page.get_by_role("heading", name="Latest actions"))
    expect(card.locator("tbody tr")).to_have_count(8)
    shot = screenshot("dashboard-latest-actions-390")
    assert card.evaluate("el => el.scrollWidth <= el.clientWidth + 1"), shot
    # Each row's outcome is on screen, not behind a scroll bar.
    for i in range(8):
        box = card.locator("tbody tr").nth(i).locator("td").last.bounding_box()
        assert box is not None and box["x"] + box["width"] <= 390, box
    assert_no_sideways_scroll(page)
