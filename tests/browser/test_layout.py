"""Pages at a 1280 px laptop width: everything an operator acts on is on screen."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from integrations.microsoft.models import MonitoredUser, Subscription
from portal.lib.crypto import encrypt
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
