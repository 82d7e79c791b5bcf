"""The console's frame at a laptop's 1280 x 800 and a phone's 390 x 844, for every role: the
navigation is one row (laptop) or one Menu button (phone), nothing scrolls sideways, the current
section is marked."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from integrations.microsoft.models import OutboundMessage
from portal.jobs.models import Job
from tests.browser.conftest import low_contrast_texts, open_nav_item
from tests.conftest import NAV_BY_ROLE, PERSONAS
from tests.portal.console.test_search import world  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


_OVERFLOWING = """(limit) => [...document.querySelectorAll("body *")]
  .filter((el) => el.getBoundingClientRect().right > limit + 1 && el.children.length === 0)
  .slice(0, 5)
  .map((el) => `${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 40)}"`)
"""


def assert_no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    limit = page.viewport_size["width"]
    if width > limit:
        culprits = page.evaluate(_OVERFLOWING, limit)
        pytest.fail(f"{page.url} is {width} px wide: {culprits}")


@pytest.mark.parametrize("role", list(PERSONAS))
def test_the_navigation_is_one_row_at_1280(role, page, live_server, personas, sign_in, screenshot):
    page.set_viewport_size(LAPTOP)
    sign_in(PERSONAS[role])
    nav = page.get_by_role("navigation", name="Main")
    # Every entry is there (inside its group's menu), in the navigation's order.
    expect(nav.locator("a")).to_have_text(NAV_BY_ROLE[role])
    # One row: the whole bar is as tall as one line of buttons.
    assert page.locator("header.topbar").bounding_box()["height"] <= 60
    assert_no_sideways_scroll(page)
    screenshot(f"frame-{role}-1280")

    # Every page fits and marks its section.
    for label in NAV_BY_ROLE[role]:
        if label == "Django admin":
            continue
        open_nav_item(page, label)
        current = nav.locator("[aria-current=page]")
        expect(current).to_have_text(label)
        assert page.locator("header.topbar").bounding_box()["height"] <= 60, label
        assert_no_sideways_scroll(page)


@pytest.mark.parametrize("role", list(PERSONAS))
def test_a_phone_gets_one_menu_and_no_sideways_scroll(
    role, page, live_server, personas, sign_in, screenshot
):
    page.set_viewport_size(PHONE)
    sign_in(PERSONAS[role])
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()
    menu = page.get_by_role("link", name="Menu")
    expect(menu).to_be_visible()
    # The bar takes at most a sixth of the screen.
    assert page.locator("header.topbar").bounding_box()["height"] <= 844 / 6
    screenshot(f"frame-{role}-390")
    for label in NAV_BY_ROLE[role]:
        if label == "Django admin":
            continue
        open_nav_item(page, label)
        assert_no_sideways_scroll(page)
    open_nav_item(page, "Dashboard")
    menu.click()
    expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    expect(menu).to_have_attribute("aria-expanded", "true")
    screenshot(f"frame-{role}-390-menu")
    assert_no_sideways_scroll(page)


def test_the_menu_works_without_javascript(browser, live_server, personas):
    context = browser.new_context(java_script_enabled=False, viewport=PHONE)
    page = context.new_page()
    page.goto(live_server.url + "/login/")
    page.get_by_label("Username").fill(PERSONAS["operator"])
    page.get_by_label("Password").fill("correct horse battery staple 42")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Menu").click()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav).to_be_visible()
    nav.get_by_text("Integration").click()
    nav.get_by_role("link", name="Graph calls").click()
    expect(page.get_by_role("heading", name="Graph calls and rate limits")).to_be_visible()
    context.close()


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["1280", "390"])
def test_the_search_box_finds_each_kind_and_slash_focuses_it(
    viewport, page, live_server, personas, sign_in, screenshot, world
):
    page.set_viewport_size(viewport)
    sign_in(PERSONAS["admin"])
    finds = [
        ("sync-key-77", f"/jobs/{world['job'].pk}/"),
        ("driver.kim@fleetdemo.example", f"/messages/{world['message'].pk}/"),
        ("order-4711-confirmation", f"/messages/{world['message'].pk}/"),
        ("Lena Ortiz", f"/sync/users/{world['user'].pk}/"),
        ("7f9c2b1e-5d4a-4c3b-9a8e-000000000042", f"/subscriptions/?id={world['subscription'].pk}"),
        ("0b6a1f3e-9d2c-4f6b-8a51-3c2d1e0f9a87", "/graph/?request_id="),
        ("dispatch.fleet.example", f"/event-endpoints/{world['endpoint'].pk}/"),
        ("a1b2c3d4", "/audit/?target_type=sync_state"),
    ]
    for query, landing in finds:
        page.locator("main").click(position={"x": 5, "y": 5})
        page.keyboard.press("/")
        search = page.get_by_role("searchbox", name="Search")
        expect(search).to_be_focused()
        search.fill(query)
        search.press("Enter")
        page.wait_for_url(f"**{landing}*")
        assert_no_sideways_scroll(page)
    # Several hits: a list, each linking to its page.
    Job.objects.filter(pk=world["job"].pk).update(id=5000)
    OutboundMessage.objects.filter(pk=world["message"].pk).update(id=5000)
    page.keyboard.press("/")
    page.get_by_role("searchbox", name="Search").fill("5000")
    page.get_by_role("searchbox", name="Search").press("Enter")
    expect(page.get_by_role("heading", name="Search")).to_be_visible()
    expect(page.get_by_role("row").filter(has_text="Job")).to_have_count(1)
    expect(page.get_by_role("row").filter(has_text="Message")).to_have_count(1)
    assert_no_sideways_scroll(page)
    screenshot(f"search-results-{viewport['width']}")


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_text_keeps_aa_contrast_in_both_themes_and_focus_is_visible(
    theme, page, live_server, personas, sign_in, screenshot, world
):
    page.emulate_media(color_scheme=theme)
    page.set_viewport_size(LAPTOP)
    sign_in(PERSONAS["admin"])
    for path in (
        "/",
        "/jobs/?status=dead",
        f"/jobs/{world['job'].pk}/",
        "/messages/?status=all",
        f"/messages/{world['message'].pk}/",
        "/subscriptions/",
        f"/sync/users/{world['user'].pk}/",
        "/graph/",
        "/credentials/",
        "/audit/",
        "/settings/",
        "/search/?q=5000&list=1",
    ):
        page.goto(live_server.url + path)
        assert low_contrast_texts(page) == [], path
    screenshot(f"theme-{theme}-settings")
    # Keyboard: Tab reaches the navigation and shows where focus is.
    page.goto(live_server.url + "/")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    focused = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.tagName, s.outlineStyle, s.outlineWidth]; })()"
    )
    assert focused[1] != "none" and focused[2] != "0px", focused
