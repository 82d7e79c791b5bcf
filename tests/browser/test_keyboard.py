"""The console by keyboard alone: Tab reaches every control on the dashboard and on a list
page, focus is always visible, "/" focuses the search, and an action runs from the keyboard."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from portal.jobs.models import Job
from tests.browser.test_console_layout import LAPTOP
from tests.conftest import PERSONAS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Every control a mouse could use that is on screen (not inside a closed menu).
_CONTROLS = """() => [...document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, summary')]
  .filter((el) => !el.disabled && el.getClientRects().length
    && !el.closest('details:not([open]) > :not(summary)'))
  .map((el) => el.dataset.kbd || (el.dataset.kbd = String(Math.random())))"""

# The focused control: its mark, and whether its focus ring shows.
_FOCUSED = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return null;
  const style = getComputedStyle(el);
  const ring = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
  return {
    mark: el.dataset.kbd || (el.dataset.kbd = String(Math.random())),
    ring: ring || style.boxShadow !== 'none',
    text: (el.innerText || el.value || el.getAttribute('aria-label') || el.outerHTML)
      .trim().slice(0, 120),
  };
}"""


def tab_through(page, limit: int = 400) -> list[dict]:
    """Tab from the top of the page until focus leaves it; what got focus, in order."""
    seen: list[dict] = []
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(_FOCUSED)
        if focused is None or (seen and focused["mark"] == seen[0]["mark"]):
            break
        seen.append(focused)
    return seen


def assert_every_control_is_reached_with_a_visible_ring(page) -> None:
    page.goto(page.url.split("#")[0])  # focus starts at the top of a fresh page
    controls = set(page.evaluate(_CONTROLS))
    reached = tab_through(page)
    hidden_rings = [f["text"] for f in reached if not f["ring"]]
    assert hidden_rings == [], f"focus not visible on {hidden_rings} ({page.url})"
    missed = controls - {f["mark"] for f in reached}
    names = page.evaluate(
        "(marks) => marks.map("
        "(m) => document.querySelector(`[data-kbd='${m}']`).outerHTML.slice(0, 80))",
        sorted(missed),
    )
    assert names == [], f"not reachable by Tab on {page.url}: {names}"


def test_the_dashboard_and_a_list_page_work_by_keyboard(
    page, live_server, personas, sign_in, screenshot
):
    dead = Job.objects.create(job_type="jobs.noop", status=Job.Status.DEAD, last_error="boom")
    page.set_viewport_size(LAPTOP)
    sign_in(PERSONAS["operator"])

    # The first Tab offers to skip the navigation.
    page.goto(live_server.url + "/")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Enter")
    assert page.evaluate("location.hash") == "#content"

    assert_every_control_is_reached_with_a_visible_ring(page)
    screenshot("keyboard-dashboard")

    # "/" focuses the search from anywhere but a text field.
    page.locator("h1").click()
    page.keyboard.press("/")
    expect(page.get_by_role("searchbox", name="Search")).to_be_focused()

    # A navigation group opens from the keyboard, and Escape closes it.
    page.goto(live_server.url + "/")
    work = page.locator("summary", has_text="Work")
    work.focus()
    page.keyboard.press("Enter")
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs")
    ).to_be_visible()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="Jobs", exact=True)).to_be_visible()

    page.goto(live_server.url + "/jobs/?status=dead")
    assert_every_control_is_reached_with_a_visible_ring(page)
    # Retry the dead job without a mouse: Tab to its button, Enter.
    retry = page.locator(f"form[action='/jobs/{dead.pk}/retry'] button")
    for _ in range(200):
        page.keyboard.press("Tab")
        if retry.evaluate("el => el === document.activeElement"):
            break
    else:
        pytest.fail("Tab never reached the Retry button")
    screenshot("keyboard-jobs-retry-focused")
    page.keyboard.press("Enter")
    expect(page.locator(".messages")).to_contain_text("queued again")
    dead.refresh_from_db()
    assert dead.status != Job.Status.DEAD
