"""Every console page for every role, at a laptop's and a phone's width, light and dark:
`make screenshots` keeps a screenshot of each in test-artifacts/screenshots/pages/ to look at,
and fails on sideways scrolling, text below WCAG AA contrast or a browser error.

Too long for CI's budget (tests/browser/test_console_layout.py runs a representative set
there): it runs only when SCREENSHOTS=1, as `make screenshots` sets it.
"""

from __future__ import annotations

import os
import re

import pytest

from tests.browser.conftest import ARTIFACTS, low_contrast_texts, open_nav_item
from tests.conftest import NAV_BY_ROLE, PERSONAS
from tests.portal.console.test_search import world  # noqa: F401  (fixture)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(os.environ.get("SCREENSHOTS") != "1", reason="make screenshots"),
]

VIEWPORTS = {"1280": {"width": 1280, "height": 800}, "390": {"width": 390, "height": 844}}


def detail_pages(role: str, world) -> list[tuple[str, str]]:
    pages = [
        ("job", f"/jobs/{world['job'].pk}/"),
        ("message", f"/messages/{world['message'].pk}/"),
        ("monitored-user", f"/sync/users/{world['user'].pk}/"),
        ("search", "/search/?q=5000&list=1"),
    ]
    if role == "admin":
        pages.append(("event-endpoint", f"/event-endpoints/{world['endpoint'].pk}/"))
    return pages


@pytest.mark.parametrize("theme", ["light", "dark"])
@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("role", list(PERSONAS))
def test_every_page(role, viewport, theme, page, live_server, personas, sign_in, world):
    page.emulate_media(color_scheme=theme)
    page.set_viewport_size(VIEWPORTS[viewport])
    sign_in(PERSONAS[role])
    folder = ARTIFACTS / "pages"
    folder.mkdir(parents=True, exist_ok=True)
    problems = []
    labels = [label for label in NAV_BY_ROLE[role] if label != "Django admin"]
    visits = [(label, None) for label in labels] + detail_pages(role, world)
    for name, path in visits:
        if path is None:
            open_nav_item(page, name)
        else:
            page.goto(live_server.url + path)
        slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        page.screenshot(path=str(folder / f"{slug}-{role}-{viewport}-{theme}.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > VIEWPORTS[viewport]["width"]:
            problems.append(f"{name}: {width} px wide")
        problems += [f"{name}: {text}" for text in low_contrast_texts(page)]
    assert problems == []
